import { parseCookie, stringifySetCookie } from "cookie";

/** The browser session cookie: `<session id>.<secret>`. */
export const sessionCookieName = "devex_session";

/**
 * The cookie that binds a login's `state` to the browser that started it, so a `code` and
 * `state` stolen or planted by another site cannot complete the login in this browser.
 */
export const loginCookieName = "devex_login";

/** The one cookie named `name` of a `Cookie` request header, if any. */
export function readCookie(header: string | null | undefined, name: string): string | undefined {
  if (!header) return undefined;
  return parseCookie(header)[name] || undefined;
}

/**
 * A `Set-Cookie` value: HttpOnly (no script reads it), SameSite=Lax (not sent on cross-site
 * subrequests), Path=/, Secure when served over https, and a Max-Age (0 clears it).
 */
export function setCookie(name: string, value: string, maxAgeMs: number, secure: boolean): string {
  return stringifySetCookie({
    name,
    value,
    maxAge: Math.max(0, Math.floor(maxAgeMs / 1000)),
    httpOnly: true,
    sameSite: "lax",
    path: "/",
    secure,
  });
}

/** A `Set-Cookie` value that removes the cookie `name`. */
export function clearCookie(name: string, secure: boolean): string {
  return setCookie(name, "", 0, secure);
}
