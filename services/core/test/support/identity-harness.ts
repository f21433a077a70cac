import type { DescService } from "@bufbuild/protobuf";
import { type CallOptions, type Client, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { AdminService } from "@devex/gen/devex/core/v1/admin_pb.js";
import { AuthService } from "@devex/gen/devex/core/v1/auth_pb.js";
import { ReplService } from "@devex/gen/devex/core/v1/repl_pb.js";
import { createLogger, type Server, startServer } from "@devex/kit";
import { createAuthInterceptor } from "../../src/auth/interceptor.js";
import { createAuthService } from "../../src/identity/auth-service.js";
import { createLoginRoutes } from "../../src/identity/callback.js";
import { createIdentity, type Identity, type IdentityOptions } from "../../src/identity/identity.js";
import { createEmbeddedStore } from "../../src/state/embedded.js";
import type { StateStore } from "../../src/state/store.js";

/** A clock tests move; shared by the store and the identity component. */
export interface TestClock {
  ms: number;
  now(): number;
  advance(ms: number): void;
}

/** A clock starting at the real time. */
export function testClock(): TestClock {
  const clock: TestClock = {
    ms: Date.now(),
    now: () => clock.ms,
    advance: (ms) => {
      clock.ms += ms;
    },
  };
  return clock;
}

/** What a test call presents. */
export interface Credentials {
  bearer?: string;
  /** The whole Cookie header. */
  cookie?: string;
  /** The client address, as a trusted proxy reports it (tests play several clients). */
  address?: string;
  /** Extra request headers. */
  headers?: Record<string, string>;
}

/** A kit server with the identity component wired as core wires it. */
export interface IdentityServer {
  server: Server;
  url: string;
  identity: Identity;
  store: StateStore;
  clock: TestClock;
  /** A Connect (HTTP/1.1, binary) client presenting the credentials. */
  client<S extends DescService>(service: S, credentials?: Credentials): Client<S>;
  /** A gRPC (h2c) client presenting the credentials. */
  grpcClient<S extends DescService>(service: S, credentials?: Credentials): Client<S>;
  close(): Promise<void>;
}

/** Request headers from credentials. */
export function credentialHeaders(credentials: Credentials): Interceptor {
  return (next) => (req) => {
    if (credentials.bearer !== undefined) req.header.set("authorization", `Bearer ${credentials.bearer}`);
    if (credentials.cookie !== undefined) req.header.set("cookie", credentials.cookie);
    if (credentials.address !== undefined) req.header.set("x-forwarded-for", credentials.address);
    for (const [name, value] of Object.entries(credentials.headers ?? {})) req.header.set(name, value);
    return next(req);
  };
}

/** Starts a kit server on port 0 with the AuthService, the auth interceptor and the login routes. */
export async function startIdentityServer(
  options: Partial<Omit<IdentityOptions, "store" | "now">> = {},
): Promise<IdentityServer> {
  const clock = testClock();
  const store = await createEmbeddedStore({ now: clock.now });
  // The public URL is known only once the port is: the identity is built lazily behind these.
  let identity: Identity | undefined;
  const current = () => {
    if (!identity) throw new Error("identity not built yet");
    return identity;
  };
  const server = await startServer({
    name: "core",
    logger: createLogger({ service: "core", level: "silent" }),
    port: 0,
    routes: (router) => {
      router.service(AuthService, {
        getCurrentUser: (req, ctx) => service().getCurrentUser(req, ctx),
        listLoginProviders: (req, ctx) => service().listLoginProviders(req, ctx),
        startLogin: (req, ctx) => service().startLogin(req, ctx),
        completeLogin: (req, ctx) => service().completeLogin(req, ctx),
        devLogin: (req, ctx) => service().devLogin(req, ctx),
        logout: (req, ctx) => service().logout(req, ctx),
        listSessions: (req, ctx) => service().listSessions(req, ctx),
        revokeSession: (req, ctx) => service().revokeSession(req, ctx),
        createApiKey: (req, ctx) => service().createApiKey(req, ctx),
        listApiKeys: (req, ctx) => service().listApiKeys(req, ctx),
        revokeApiKey: (req, ctx) => service().revokeApiKey(req, ctx),
      });
      // Unimplemented: a call that reaches them got past authentication and the scope check.
      router.service(AdminService, {});
      router.service(ReplService, {});
    },
    interceptors: [(next) => (req) => createAuthInterceptor(current())(next)(req)],
    fallback: (req, res) => createLoginRoutes(current())(req, res),
    shutdownGraceMs: 1_000,
  });
  identity = createIdentity({
    sessionTtlMs: 14 * 86_400_000,
    publicUrl: server.url,
    // Tests play clients at several addresses through X-Forwarded-For, as behind a proxy.
    trustProxy: true,
    ...options,
    store,
    now: clock.now,
  });
  let impl: ReturnType<typeof createAuthService> | undefined;
  const service = () => {
    impl ??= createAuthService(current());
    return impl;
  };

  const make = (transport: (interceptors: Interceptor[]) => Transport) => {
    return <S extends DescService>(descriptor: S, credentials: Credentials = {}) =>
      createClient(descriptor, transport([credentialHeaders(credentials)]));
  };
  return {
    server,
    url: server.url,
    identity: current(),
    store,
    clock,
    client: make((interceptors) => createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", interceptors })),
    grpcClient: make((interceptors) => createGrpcTransport({ baseUrl: server.url, interceptors })),
    async close() {
      await server.close(0);
      await store.close();
    },
  };
}

/** Call options that collect the response headers of one call (also of a failed one, through the error). */
export function capture(): { options: CallOptions; headers: () => Headers } {
  let received = new Headers();
  return {
    options: {
      onHeader(header) {
        received = header;
      },
    },
    headers: () => received,
  };
}

/** The `name=value` part of the Set-Cookie header for `name`, and the whole header. */
export function cookieFrom(headers: Headers, name: string): { pair: string; attributes: string } | undefined {
  const line = headers.getSetCookie().find((c) => c.startsWith(`${name}=`));
  if (!line) return undefined;
  return { pair: line.split(";")[0] ?? "", attributes: line };
}
