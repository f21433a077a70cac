import { Code, ConnectError } from "@connectrpc/connect";
import type { HttpFallback, HttpRequest, HttpResponse } from "@devex/kit";
import { clientAddressOf } from "../auth/client-address.js";
import { loginCookieName, readCookie, sessionCookieName } from "./cookies.js";
import { callbackPathPrefix, type Identity } from "./identity.js";
import { completeLogin, type LoginClient, safeReturnPath, startLogin } from "./login.js";

/** The path of the browser login route: `GET /auth/login/<provider id>?return_to=<path>`. */
export const loginPathPrefix = "/auth/login/";

const providerIdPattern = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;

function header(req: HttpRequest, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(", ") : value;
}

/** The HTTP status of a failed browser login. */
function statusOf(error: ConnectError): number {
  switch (error.code) {
    case Code.ResourceExhausted:
      return 429;
    case Code.Unavailable:
      return 503;
    case Code.Internal:
    case Code.Unknown:
      return 500;
    default:
      return 400;
  }
}

/**
 * The browser routes of the login, for a server's `fallback` (the kit's {@link HttpFallback}):
 *
 * - `GET /auth/callback/<provider id>?code&state` — where providers send the browser back by
 *   default: completes the login (as CompleteLogin does), sets the session cookie and
 *   redirects (303) to the path the login was started for, or `/`;
 * - `GET /auth/login/<provider id>?return_to=<path>` — starts a login without script: sets the
 *   login cookie and redirects (303) to the provider.
 *
 * Failures answer a short plain-text page: 400, or 429 (with Retry-After) when rate limited,
 * 503 when the provider cannot be reached. Other requests are left to the server (false).
 */
export function createLoginRoutes(identity: Identity): HttpFallback {
  const plain = (res: HttpResponse, status: number, text: string, headers: Record<string, string> = {}) => {
    res.statusCode = status;
    res.setHeader("content-type", "text/plain; charset=utf-8");
    res.setHeader("cache-control", "no-store");
    res.setHeader("x-content-type-options", "nosniff");
    for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
    res.end(text);
  };
  const fail = (res: HttpResponse, error: unknown) => {
    const ce = ConnectError.from(error);
    if (statusOf(ce) >= 500) identity.logger?.warn({ err: ce.cause ?? ce }, "browser login failed");
    const retryAfter = ce.metadata.get("retry-after");
    plain(
      res,
      statusOf(ce),
      `Sign-in failed: ${ce.rawMessage}\n\nStart again from ${identity.publicUrl.origin}/\n`,
      retryAfter ? { "retry-after": retryAfter } : {},
    );
  };
  const redirect = (res: HttpResponse, location: string, cookies: string[]) => {
    res.statusCode = 303;
    res.setHeader("location", location);
    res.setHeader("cache-control", "no-store");
    res.setHeader("set-cookie", cookies);
    res.end();
  };

  return async (req, res) => {
    if (req.method !== "GET" || !req.url) return false;
    const url = new URL(req.url, "http://localhost");
    const route = url.pathname.startsWith(callbackPathPrefix)
      ? "callback"
      : url.pathname.startsWith(loginPathPrefix)
        ? "login"
        : undefined;
    if (!route) return false;
    const providerId = url.pathname.slice((route === "callback" ? callbackPathPrefix : loginPathPrefix).length);
    if (!providerIdPattern.test(providerId)) return false;
    const client: LoginClient = {
      address: clientAddressOf((name) => header(req, name), identity.clientAddress, req.socket.remoteAddress),
      userAgent: header(req, "user-agent") ?? "",
    };

    try {
      if (route === "login") {
        const started = await startLogin(identity, {
          providerId,
          returnTo: safeReturnPath(url.searchParams.get("return_to")),
          client,
        });
        redirect(res, started.authorizationUrl, [started.setCookie]);
        return true;
      }
      const params = url.searchParams;
      const providerError = params.get("error");
      if (providerError) {
        plain(res, 400, `Sign-in was not completed: the provider answered "${providerError}".\n`);
        return true;
      }
      const code = params.get("code");
      const state = params.get("state");
      if (!code || !state) {
        plain(res, 400, "Sign-in failed: the provider's redirect has no code or state.\n");
        return true;
      }
      // A browser already signed in adds this identity to its user, as CompleteLogin does.
      const sessionToken = readCookie(header(req, "cookie"), sessionCookieName);
      const current = sessionToken ? await identity.sessions.verify(sessionToken) : undefined;
      const signedIn = await completeLogin(identity, {
        providerId,
        code,
        state,
        params,
        loginCookie: readCookie(header(req, "cookie"), loginCookieName),
        ...(current?.ok ? { linkToUserId: current.session.record.userId } : {}),
        client,
      });
      if (current?.ok) await identity.sessions.delete(current.session.record.userId, current.session.record.id);
      redirect(res, signedIn.returnTo ?? "/", signedIn.setCookies);
    } catch (error) {
      fail(res, error);
    }
    return true;
  };
}
