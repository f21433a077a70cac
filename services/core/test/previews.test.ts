/**
 * Previews end to end over real runner processes (the bundle `npm run build` makes): the
 * start command, then apps started through ProcessService reached through core's preview
 * origin and each runner's preview proxy (a Unix socket), from Node and from headless Chromium.
 * The orchestrator here is a small stand-in that runs the runner bundle without a sandbox.
 */

import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import * as http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Client, Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ReplService } from "@devex/gen/devex/core/v1/repl_pb.js";
import { ProcessService } from "@devex/gen/devex/runner/v1/process_pb.js";
import { createLogger, signRunnerToken } from "@devex/kit";
import { freePort, repoRoot, type SpawnedService, spawnService } from "@devex/kit/testing";
import { exportSPKI, generateKeyPair } from "jose";
import puppeteer, { type Browser } from "puppeteer-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { callerKey } from "../src/auth/caller.js";
import { newId } from "../src/ids.js";
import type { UserRecord } from "../src/model.js";
import type { Orchestrator, RunnerInstance, RunnerSpec } from "../src/orchestrator/orchestrator.js";
import type { TokenKeys } from "../src/orchestrator/token-keys.js";
import { type PreviewAddress, previewAddress, previewHostName } from "../src/previews/hosts.js";
import { type PreviewOrigin, startPreviewOrigin } from "../src/previews/preview-origin.js";
import { signPreviewCredential } from "../src/previews/tokens.js";
import { createReplLifecycle, type ReplLifecycle } from "../src/repls/lifecycle.js";
import { createReplService, type ReplServiceOptions } from "../src/repls/repl-service.js";
import { createReplRepository, type ReplRepository, type StoredRepl } from "../src/repls/repository.js";
import { appProcessTag, createStartCommandLauncher } from "../src/repls/start-command.js";
import { createRunnerEndpoints, type RunnerEndpoints } from "../src/routing/endpoints.js";
import { createEmbeddedStore } from "../src/state/embedded.js";
import type { StateStore } from "../src/state/store.js";
import type { TemplateCatalog, TemplateRecord } from "../src/templates/catalog.js";

const logger = createLogger({ service: "core", level: process.env.DEVEX_TEST_LOG_LEVEL ?? "silent" });

/** Runs one runner process per repl from the bundle, with its preview proxy on a socket; no sandbox. */
class RunnerProcesses implements Orchestrator {
  readonly driver = "test-processes";
  readonly runners = new Map<string, { instance: RunnerInstance; service: SpawnedService; dir: string }>();
  constructor(
    private readonly root: string,
    private readonly publicKeyPem: string,
  ) {}
  workspacePath(replId: string): string {
    return join(this.root, replId, "workspace");
  }
  async start(spec: RunnerSpec): Promise<RunnerInstance> {
    const existing = this.runners.get(spec.replId);
    if (existing) return existing.instance;
    const dir = join(this.root, spec.replId);
    await mkdir(join(dir, "home"), { recursive: true });
    const socket = join(dir, "preview.sock");
    const service = await spawnService(
      "runner/dist/main.js",
      [
        "--repl-id",
        spec.replId,
        "--workspace",
        this.workspacePath(spec.replId),
        "--home",
        join(dir, "home"),
        `--token-public-key=${this.publicKeyPem}`,
        "--preview-socket",
        socket,
      ],
      {},
      [],
      "listening",
    );
    for (let i = 0; i < 200 && !existsSync(socket); i++) await new Promise((r) => setTimeout(r, 25));
    const instance: RunnerInstance = {
      id: dir,
      replId: spec.replId,
      userId: spec.userId,
      phase: "ready",
      endpoint: service.url,
      previewEndpoint: `unix:${socket}`,
      startedAtMs: Date.now(),
    };
    this.runners.set(spec.replId, { instance, service, dir });
    return instance;
  }
  async waitReady(replId: string): Promise<RunnerInstance> {
    const runner = this.runners.get(replId);
    if (!runner) throw new ConnectError("no runner", Code.Unavailable);
    return runner.instance;
  }
  async get(replId: string) {
    return this.runners.get(replId)?.instance;
  }
  async list() {
    return [...this.runners.values()].map((runner) => runner.instance);
  }
  async stop(replId: string): Promise<void> {
    const runner = this.runners.get(replId);
    this.runners.delete(replId);
    await runner?.service.stop();
  }
  async removeWorkspace(replId: string): Promise<void> {
    await rm(join(this.root, replId), { recursive: true, force: true });
  }
  async close(): Promise<void> {
    await Promise.all([...this.runners.keys()].map((replId) => this.stop(replId)));
  }
}

/** An app with a page that echoes what it received, an event stream and a WebSocket echo. */
const appSource = (port: number) => `
const http = require("node:http");
const { WebSocketServer } = require(${JSON.stringify(join(repoRoot, "node_modules", "ws"))});
const server = http.createServer((req, res) => {
  if (req.url === "/events") {
    res.writeHead(200, { "content-type": "text/event-stream" });
    res.flushHeaders();
    let n = 0;
    const timer = setInterval(() => {
      res.write("data: tick " + n++ + "\\n\\n");
      if (n === 3) { clearInterval(timer); res.end(); }
    }, 60);
    return;
  }
  res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
  res.end("<!doctype html><title>app</title><body><p id=hello>hello from the app</p><pre id=seen>" +
    JSON.stringify({ url: req.url, cookie: req.headers.cookie ?? null, authorization: req.headers.authorization ?? null,
      proxyAuthorization: req.headers["proxy-authorization"] ?? null, previewPort: req.headers["x-devex-preview-port"] ?? null, host: req.headers.host }) + "</pre></body>");
});
new WebSocketServer({ server }).on("connection", (ws) => ws.on("message", (data) => ws.send("echo: " + data)));
server.listen(${port}, "127.0.0.1");
`;

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A request to the preview origin for `host`, as a browser would send it. */
function get(
  origin: PreviewOrigin,
  host: string,
  path: string,
  headers: Record<string, string> = {},
  onChunk?: (atMs: number) => void,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: "127.0.0.1", port: origin.port, path, headers: { ...headers, host: `${host}:${origin.port}` } },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          body += chunk;
          onChunk?.(performance.now());
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

const user = (name: string): UserRecord => ({
  id: newId("usr", Date.now()),
  displayName: name,
  email: "",
  avatarUrl: "",
  admin: false,
  identities: [],
  createdAtMs: Date.now(),
});

describe("previews", () => {
  let root: string;
  let store: StateStore;
  let repository: ReplRepository;
  let endpoints: RunnerEndpoints;
  let lifecycle: ReplLifecycle;
  let runners: RunnerProcesses;
  let origin: PreviewOrigin;
  let address: PreviewAddress;
  let tokenKeys: TokenKeys;
  let browser: Browser | undefined;
  const owner = user("owner");
  const stranger = user("stranger");
  let templatePort: number;
  let appPort: number;
  let repls: Client<typeof ReplService>;
  let strangerRepls: Client<typeof ReplService>;

  const template = (name: string, startCommand: string, port: number): TemplateRecord => ({
    name,
    displayName: name,
    description: name,
    runnerImage: "runner:test",
    startCommand,
    ports: [{ number: port, name: "web", protocol: "http" }],
    language: "javascript",
    tags: [],
    sizeBytes: 0,
    updatedAtMs: 0,
    archive: {
      key: "",
      sha256: "0".repeat(64),
      bytes: 0,
      fileCount: 0,
      directoryCount: 0,
      symlinkCount: 0,
      contentBytes: 0,
    },
  });

  const createRepl = async (templateName: string, ownerUser = owner): Promise<string> => {
    const atMs = Date.now();
    const record: StoredRepl = {
      id: newId("repl", atMs),
      name: `r${Math.random().toString(36).slice(2, 10)}`,
      ownerUserId: ownerUser.id,
      templateName,
      state: "created",
      failureReason: "",
      createdAtMs: atMs,
      updatedAtMs: atMs,
      idleTimeoutMs: 0,
      currentSnapshotId: "",
      labels: {},
    };
    await repository.create(record, 100);
    return record.id;
  };

  const processes = async (replId: string) => {
    const token = await signRunnerToken(tokenKeys.privateKey, {
      replId,
      userId: owner.id,
      role: "user",
      ttlMs: 60_000,
    });
    const endpoint = (await runners.get(replId))?.endpoint as string;
    return createClient(
      ProcessService,
      createGrpcTransport({
        baseUrl: endpoint,
        interceptors: [
          (next) => (req) => {
            req.header.set("authorization", `Bearer ${token}`);
            return next(req);
          },
        ],
      }),
    );
  };

  /** A running repl whose app (app.js, started through ProcessService) listens on `appPort`. */
  let replId: string;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "devex-previews-"));
    const pair = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
    const publicKeyPem = await exportSPKI(pair.publicKey);
    tokenKeys = { privateKey: pair.privateKey, publicKey: pair.publicKey, publicKeyPem };
    [templatePort, appPort] = [await freePort(), await freePort()];
    const templates = [
      template(
        "web",
        `exec node -e 'require("http").createServer((q, s) => s.end("started by core")).listen(${templatePort}, "127.0.0.1")'`,
        templatePort,
      ),
      template("plain", "", appPort),
    ];
    const catalog: TemplateCatalog = {
      list: async () => templates,
      get: async (name) => templates.find((candidate) => candidate.name === name),
    };
    store = await createEmbeddedStore();
    repository = createReplRepository({ store, pollIntervalMs: 25 });
    runners = new RunnerProcesses(root, publicKeyPem);
    lifecycle = createReplLifecycle({
      orchestrator: runners,
      repository,
      startTimeoutMs: 30_000,
      stopGraceMs: 500,
      logger,
      onRunning: createStartCommandLauncher({ templates: catalog, tokenKeys, logger }),
    });
    endpoints = createRunnerEndpoints(repository);
    origin = await startPreviewOrigin({
      port: 0,
      address: previewAddress({ domain: "localhost", port: 0 }),
      repository,
      running: endpoints.running,
      tokenKeys,
      logger,
    });
    address = previewAddress({ domain: "localhost", port: origin.port });
    const service = createReplService({
      lifecycle,
      // Previews never touch snapshots.
      snapshots: {} as ReplServiceOptions["snapshots"],
      templates: catalog,
      tokenKeys,
      replPublicUrl: "http://127.0.0.1:1",
      config: { replQuota: 100, idleTimeoutMs: 300_000, runnerTokenTtlMs: 600_000 },
      previews: address,
    });
    const clientFor = (caller: UserRecord) =>
      createClient(
        ReplService,
        createRouterTransport((router) => router.service(ReplService, service), {
          router: {
            interceptors: [
              (next) => (req) => {
                req.contextValues.set(callerKey, {
                  user: caller,
                  credential: { kind: "session", sessionId: "ses_test", scope: "full" },
                });
                return next(req);
              },
            ],
          },
        }),
      );
    repls = clientFor(owner);
    strangerRepls = clientFor(stranger);

    replId = await createRepl("plain");
    await lifecycle.start(replId);
    await writeFile(join(runners.workspacePath(replId), "app.js"), appSource(appPort));
    const client = await processes(replId);
    for await (const event of client.startProcess({ config: { argv: ["node", "app.js"], tag: "test-app" } })) {
      if (event.event.case === "started") break;
    }
    // The app listens once node has loaded it.
    for (let i = 0; i < 200; i++) {
      const answer = await get(origin, previewHostName(address, replId, appPort), "/", {
        cookie: `devex_preview=${(await signPreviewCredential(tokenKeys.privateKey, "cookie", { replId, port: appPort, userId: owner.id }, 60_000)).token}`,
      });
      if (answer.status === 200) break;
      await new Promise((r) => setTimeout(r, 50));
    }
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await origin?.close();
    await endpoints?.close();
    await runners?.close();
    await store?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  /** Follows a preview URL's token exchange by hand: the redirect and the cookie. */
  const signIn = async (url: string) => {
    const parsed = new URL(url);
    const answer = await get(origin, parsed.hostname, `${parsed.pathname}${parsed.search}`);
    const cookie = String(answer.headers["set-cookie"]?.[0] ?? "");
    return { answer, cookie, value: cookie.split(";")[0] as string };
  };

  it("starts a template's start command as the app process, and serves it", async () => {
    const started = await createRepl("web");
    await lifecycle.start(started);
    const listed = await (await processes(started)).listProcesses({});
    const apps = listed.processes.filter((process) => process.tag === appProcessTag);
    expect(apps).toHaveLength(1);
    expect(apps[0]?.argv.slice(0, 2)).toEqual(["bash", "-lc"]);
    const { url } = await repls.getPreviewUrl({ replId: started, port: templatePort });
    const { value } = await signIn(url);
    let answer: Answer | undefined;
    for (let i = 0; i < 100; i++) {
      answer = await get(origin, previewHostName(address, started, templatePort), "/", { cookie: value });
      if (answer.status === 200) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(answer?.body).toBe("started by core");
    await lifecycle.stop(started, { reason: "user" });
  }, 30_000);

  it("lists the template's ports on the repl, private by default", async () => {
    const { repl } = await repls.getRepl({ repl: { case: "replId", value: replId } });
    expect(repl?.ports.map((port) => ({ number: port.number, name: port.name, public: port.public }))).toEqual([
      { number: appPort, name: "web", public: false },
    ]);
  });

  it("gives the owner a private URL with a one-minute token, exchanged for a host-only cookie and a redirect", async () => {
    const response = await repls.getPreviewUrl({ replId, port: appPort });
    expect(response.public).toBe(false);
    const url = new URL(response.url);
    expect(url.hostname).toBe(`${appPort}-${replId.replace("_", "-")}.localhost`);
    expect(url.port).toBe(String(origin.port));
    const expiresInMs = Number(response.expiresAt?.seconds) * 1000 - Date.now();
    expect(expiresInMs).toBeGreaterThan(50_000);
    expect(expiresInMs).toBeLessThanOrEqual(60_000);

    const { answer, cookie, value } = await signIn(`${response.url.replace("/?", "/page?x=1&")}`);
    expect(answer.status).toBe(303);
    expect(answer.headers.location).toBe("/page?x=1");
    expect(cookie).toMatch(/^devex_preview=[^;]+; Path=\/; Max-Age=\d+; HttpOnly; SameSite=Lax$/);
    expect(cookie).not.toMatch(/Domain|Secure/);

    const page = await get(origin, url.hostname, "/page?x=1", {
      cookie: `theme=dark; ${value}; devex_session=core-session`,
      authorization: "Bearer dvx_not_for_apps",
      "proxy-authorization": "Basic bm90OmZvci1hcHBz",
    });
    expect(page.status).toBe(200);
    const seen = JSON.parse(/<pre id=seen>(.*)<\/pre>/.exec(page.body)?.[1] ?? "{}");
    expect(seen).toEqual({
      url: "/page?x=1",
      cookie: "theme=dark",
      authorization: null,
      proxyAuthorization: null,
      // The runner's proxy takes core's routing header out too.
      previewPort: null,
      host: `${url.hostname}:${origin.port}`,
    });
  });

  it("refuses a private port without a credential, with a bad or expired one, and with another user's", async () => {
    const host = previewHostName(address, replId, appPort);
    const none = await get(origin, host, "/");
    expect(none.status).toBe(401);
    expect(none.headers["content-type"]).toContain("text/html");
    expect((await get(origin, host, "/?devex_preview_token=garbled")).status).toBe(401);
    expect((await get(origin, host, "/", { cookie: "devex_preview=garbled" })).status).toBe(401);
    const grant = { replId, port: appPort, userId: owner.id };
    const expired = await signPreviewCredential(tokenKeys.privateKey, "link", grant, -60_000);
    const answer = await get(origin, host, `/?devex_preview_token=${expired.token}`);
    expect(answer.status).toBe(401);
    expect(answer.body).toContain("expired");
    // A cookie is not a link token, and a runner token is neither.
    const cookie = await signPreviewCredential(tokenKeys.privateKey, "cookie", grant, 60_000);
    expect((await get(origin, host, `/?devex_preview_token=${cookie.token}`)).status).toBe(401);
    const runnerToken = await signRunnerToken(tokenKeys.privateKey, {
      replId,
      userId: owner.id,
      role: "user",
      ttlMs: 60_000,
    });
    expect((await get(origin, host, `/?devex_preview_token=${runnerToken}`)).status).toBe(401);
    // The stranger's own token, for their own repl: valid, but not for this host.
    const theirs = await createRepl("plain", stranger);
    const their = await strangerRepls.getPreviewUrl({ replId: theirs, port: appPort });
    const token = new URL(their.url).searchParams.get("devex_preview_token") as string;
    expect((await get(origin, host, `/?devex_preview_token=${token}`)).status).toBe(403);
    // A token for this repl, issued to someone who does not own it.
    const forged = await signPreviewCredential(tokenKeys.privateKey, "link", { ...grant, userId: stranger.id }, 60_000);
    expect((await get(origin, host, `/?devex_preview_token=${forged.token}`)).status).toBe(403);
    // And the API refuses the stranger outright.
    await expect(strangerRepls.getPreviewUrl({ replId, port: appPort })).rejects.toMatchObject({
      code: Code.NotFound,
    });
  });

  it("streams server-sent events as they come, and pipes WebSocket messages both ways", async () => {
    const { value } = await signIn((await repls.getPreviewUrl({ replId, port: appPort })).url);
    const host = previewHostName(address, replId, appPort);
    const arrivals: number[] = [];
    const events = await get(origin, host, "/events", { cookie: value }, (at) => arrivals.push(at));
    expect(events.headers["content-type"]).toBe("text/event-stream");
    expect(events.body).toBe("data: tick 0\n\ndata: tick 1\n\ndata: tick 2\n\n");
    expect(arrivals.length).toBe(3);
    expect((arrivals[2] as number) - (arrivals[0] as number)).toBeGreaterThan(80);

    const ws = new WebSocket(`ws://127.0.0.1:${origin.port}/socket`, {
      headers: { host: `${host}:${origin.port}`, cookie: value },
    });
    await new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    const echoed = new Promise<string>((resolve) => ws.once("message", (data) => resolve(String(data))));
    ws.send("hello over the preview");
    expect(await echoed).toBe("echo: hello over the preview");
    ws.close();

    const refused = new WebSocket(`ws://127.0.0.1:${origin.port}/socket`, {
      headers: { host: `${host}:${origin.port}` },
    });
    const status = await new Promise<number>((resolve) =>
      refused.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0)),
    );
    expect(status).toBe(401);
  });

  it("opens a public port without a token, and makes it private again", async () => {
    const made = await repls.setPortVisibility({ replId, port: appPort, public: true });
    expect(made.repl?.ports.find((port) => port.number === appPort)?.public).toBe(true);
    const extra = await repls.setPortVisibility({ replId, port: 9999, public: true });
    expect(extra.repl?.ports.map((port) => [port.number, port.name, port.public])).toEqual([
      [appPort, "web", true],
      [9999, "", true],
    ]);
    // Setting the current visibility changes nothing.
    const again = await repls.setPortVisibility({ replId, port: 9999, public: true });
    expect(again.repl?.version).toBe(extra.repl?.version);
    await expect(
      repls.setPortVisibility({ replId, port: 9999, public: false, expectedVersion: 1n }),
    ).rejects.toMatchObject({ code: Code.FailedPrecondition });

    const url = await repls.getPreviewUrl({ replId, port: appPort });
    expect(url.public).toBe(true);
    expect(url.expiresAt).toBeUndefined();
    expect(new URL(url.url).search).toBe("");
    const host = previewHostName(address, replId, appPort);
    expect((await get(origin, host, "/")).status).toBe(200);
    // A stale token from when the port was private is only dropped: no cookie, the same page without it.
    const stale = await get(origin, host, "/page?devex_preview_token=garbled&x=1");
    expect(stale.status).toBe(303);
    expect(stale.headers.location).toBe("/page?x=1");
    expect(stale.headers["set-cookie"]).toBeUndefined();
    // Nothing listens on 9999: the runner's page, through core.
    const empty = await get(origin, previewHostName(address, replId, 9999), "/");
    expect(empty.status).toBe(502);
    expect(empty.body).toContain("nothing listens on port 9999 in this repl");

    await repls.setPortVisibility({ replId, port: appPort, public: false });
    await repls.setPortVisibility({ replId, port: 9999, public: false });
    expect((await get(origin, host, "/")).status).toBe(401);
  });

  it("answers 404 for unknown hosts and repls, and 503 with a page for a repl that is not running", async () => {
    expect((await get(origin, "localhost", "/")).status).toBe(404);
    expect((await get(origin, `3000-repl-${"0".repeat(26)}.localhost`, "/")).status).toBe(404);
    expect((await get(origin, `3000-repl-${"0".repeat(26)}.example.com`, "/")).status).toBe(404);
    const stopped = await createRepl("plain");
    await repls.setPortVisibility({ replId: stopped, port: appPort, public: true });
    const answer = await get(origin, previewHostName(address, stopped, appPort), "/");
    expect(answer.status).toBe(503);
    expect(answer.body).toContain("has not been started");
  });

  it("opens a private preview URL in headless Chromium: token, cookie, redirect, then the app's page", async () => {
    const chromium = "/usr/bin/chromium";
    if (!existsSync(chromium)) throw new Error(`Chromium is missing at ${chromium}: apt-get install chromium`);
    browser = await puppeteer.launch({
      executablePath: chromium,
      headless: true,
      args: ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking"],
    });
    const page = await browser.newPage();
    const { url } = await repls.getPreviewUrl({ replId, port: appPort });
    const response = await page.goto(url, { waitUntil: "load" });
    expect(response?.status()).toBe(200);
    expect(page.url()).toBe(`http://${previewHostName(address, replId, appPort)}:${origin.port}/`);
    expect(await page.$eval("#hello", (element) => element.textContent)).toBe("hello from the app");
    // The cookie is HttpOnly: the app's scripts cannot read it.
    expect(await page.evaluate("document.cookie")).toBe("");
    // Reloading works from the cookie alone.
    expect((await page.reload())?.status()).toBe(200);
  }, 30_000);
});
