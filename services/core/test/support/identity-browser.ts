import { parseSetCookie } from "cookie";

/**
 * A minimal browser for login flows: a cookie jar (one for every host, which is fine for
 * servers on 127.0.0.1 whose cookie names differ) and redirects followed by hand.
 */
export class TestBrowser {
  readonly cookies = new Map<string, string>();

  /** The Cookie header the jar sends. */
  cookieHeader(): string {
    return [...this.cookies].map(([name, value]) => `${name}=${value}`).join("; ");
  }

  /** Stores the cookies a response sets (Max-Age=0 removes one). */
  store(headers: Headers): void {
    for (const line of headers.getSetCookie()) {
      const cookie = parseSetCookie(line);
      if (cookie.maxAge === 0 || !cookie.value) this.cookies.delete(cookie.name);
      else this.cookies.set(cookie.name, cookie.value);
    }
  }

  /** One request with the jar's cookies; never follows redirects. */
  async fetch(url: string | URL, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.cookies.size > 0) headers.set("cookie", this.cookieHeader());
    const res = await fetch(url, { ...init, headers, redirect: "manual" });
    this.store(res.headers);
    return res;
  }

  /**
   * Navigates to `url` and follows redirects until one points at a URL `stop` accepts (not
   * requested: the test decides what to do with it) or a page answers without redirecting.
   */
  async navigate(url: string | URL, stop: (url: URL) => boolean): Promise<{ url: URL; response?: Response }> {
    let current = new URL(url);
    for (let hop = 0; hop < 20; hop++) {
      if (stop(current)) return { url: current };
      const res = await this.fetch(current);
      const location = res.headers.get("location");
      if (res.status < 300 || res.status >= 400 || !location) return { url: current, response: res };
      await res.arrayBuffer();
      current = new URL(location, current);
    }
    throw new Error(`too many redirects from ${url}`);
  }
}
