import * as http2 from "node:http2";
import { afterEach, describe, expect, it } from "vitest";
import {
  ConfigError,
  type CorsOptions,
  corsOriginsSchema,
  createLogger,
  loadConfig,
  type Server,
  setting,
  startServer,
} from "../src/index.js";

const servers: Server[] = [];
const page = "http://app.example.test:5173";

async function start(cors?: CorsOptions): Promise<Server> {
  const server = await startServer({
    name: "test",
    logger: createLogger({ service: "test", level: "silent" }),
    port: 0,
    routes: () => {},
    ...(cors ? { cors } : {}),
  });
  servers.push(server);
  return server;
}

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close(100)));
});

/** What a browser sends before a Connect call with a bearer token. */
function preflight(url: string, origin = page): Promise<Response> {
  return fetch(`${url}/grpc.health.v1.Health/Check`, {
    method: "OPTIONS",
    headers: {
      origin,
      "access-control-request-method": "POST",
      "access-control-request-headers": "authorization,connect-protocol-version,content-type",
    },
  });
}

/** A Connect unary call as a page of `origin` makes it. */
function call(url: string, origin = page): Promise<Response> {
  return fetch(`${url}/grpc.health.v1.Health/Check`, {
    method: "POST",
    headers: { origin, "content-type": "application/json", "connect-protocol-version": "1", authorization: "Bearer x" },
    body: "{}",
  });
}

function corsHeaders(res: Response): Record<string, string> {
  return Object.fromEntries([...res.headers].filter(([name]) => name.startsWith("access-control-")));
}

describe("CORS", () => {
  it("answers a preflight from an allowed origin with the Connect methods and headers, without credentials", async () => {
    const server = await start({ origins: [page] });
    const res = await preflight(server.url);
    expect(res.status).toBe(204);
    const headers = corsHeaders(res);
    expect(headers["access-control-allow-origin"]).toBe(page);
    expect(headers["access-control-allow-methods"]).toBe("POST, GET");
    const allowed = (headers["access-control-allow-headers"] ?? "").toLowerCase().split(", ");
    expect(allowed).toEqual(
      expect.arrayContaining(["authorization", "content-type", "connect-protocol-version", "connect-timeout-ms"]),
    );
    expect(allowed).toEqual(expect.arrayContaining(["x-grpc-web", "x-user-agent", "grpc-timeout", "x-request-id"]));
    expect(headers["access-control-max-age"]).toBe("7200");
    expect(headers["access-control-allow-credentials"]).toBeUndefined();
    expect(res.headers.get("vary")).toBe("Origin");
  });

  it("answers preflights over h2c too", async () => {
    const server = await start({ origins: [page] });
    const session = http2.connect(server.url);
    try {
      const headers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        const stream = session.request(
          {
            ":method": "OPTIONS",
            ":path": "/grpc.health.v1.Health/Check",
            origin: page,
            "access-control-request-method": "POST",
          },
          { endStream: true },
        );
        stream.once("response", resolve);
        stream.once("error", reject);
        stream.resume();
      });
      expect(headers[":status"]).toBe(204);
      expect(headers["access-control-allow-origin"]).toBe(page);
      expect(headers["access-control-allow-methods"]).toBe("POST, GET");
    } finally {
      session.close();
    }
  });

  it("adds the allow and expose headers to calls from an allowed origin", async () => {
    const server = await start({ origins: ["https://other.example", page] });
    const res = await call(server.url);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "SERVING" });
    const headers = corsHeaders(res);
    expect(headers["access-control-allow-origin"]).toBe(page);
    const exposed = (headers["access-control-expose-headers"] ?? "").toLowerCase().split(", ");
    expect(exposed).toEqual(expect.arrayContaining(["grpc-status", "grpc-message", "grpc-status-details-bin"]));
    expect(exposed).toContain("x-request-id");
    expect(headers["access-control-allow-credentials"]).toBeUndefined();
  });

  it("allows any origin with *", async () => {
    const server = await start({ origins: "*" });
    expect(corsHeaders(await preflight(server.url, "https://anywhere.example"))["access-control-allow-origin"]).toBe(
      "*",
    );
    const res = await call(server.url, "https://anywhere.example");
    expect(res.headers.get("access-control-allow-origin")).toBe("*");
    expect(res.headers.get("vary")).toBeNull();
  });

  it("gives a disallowed origin no allow headers, so browsers block it", async () => {
    const server = await start({ origins: [page] });
    const pre = await preflight(server.url, "https://evil.example");
    expect(pre.status).toBe(204);
    expect(corsHeaders(pre)).toEqual({});
    const res = await call(server.url, "https://evil.example");
    expect(res.status).toBe(200);
    expect(corsHeaders(res)).toEqual({});
  });

  it("adds nothing when not configured", async () => {
    const server = await start();
    const pre = await preflight(server.url);
    expect(pre.status).not.toBe(204);
    expect(corsHeaders(pre)).toEqual({});
    const res = await call(server.url);
    expect(res.status).toBe(200);
    expect(corsHeaders(res)).toEqual({});
  });
});

describe("corsOriginsSchema", () => {
  const settings = {
    corsOrigins: setting({ flag: "cors-origins", env: "CORS_ORIGINS", schema: corsOriginsSchema, description: "" }),
  };
  const load = (value: string) => loadConfig(settings, { argv: ["--cors-origins", value], env: {} }).corsOrigins;

  it("reads * and comma-separated origins", () => {
    expect(load("*")).toBe("*");
    expect(load("https://a.example, http://localhost:5173/")).toEqual(["https://a.example", "http://localhost:5173"]);
  });

  it("refuses what is not an origin", () => {
    expect(() => load("https://a.example/app")).toThrow(ConfigError);
    expect(() => load("localhost:5173")).toThrow(/comma-separated origins/);
    expect(() => load(",")).toThrow(ConfigError);
  });
});
