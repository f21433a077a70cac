import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { build } from "esbuild";
import puppeteer, { type Browser } from "puppeteer-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BrowserInputResult } from "./support/browser-input-page.js";
import type { BrowserPageResult } from "./support/browser-page.js";
import { type LiveCore, startLiveCore, uniqueName } from "./support/live.js";

/** CI installs Chromium here (Debian's package); the test fails rather than skips without it. */
const chromiumPath = "/usr/bin/chromium";
const sdkDir = join(import.meta.dirname, "..");

let live: LiveCore | undefined;
let pageServer: http.Server | undefined;
let browser: Browser | undefined;
let pageOrigin: string;

/** Bundles a page script as a browser would load it: `@devex/sdk` resolves through the `browser` export. */
async function bundlePage(entry: string): Promise<string> {
  if (!existsSync(join(sdkDir, "dist/browser.js"))) {
    execFileSync("npm", ["run", "build", "-w", "sdk"], { cwd: join(sdkDir, ".."), stdio: "inherit" });
  }
  const result = await build({
    entryPoints: [join(sdkDir, "test/support", entry)],
    bundle: true,
    write: false,
    format: "esm",
    platform: "browser",
    conditions: ["browser"],
    target: "es2022",
    // The root tsconfig maps @devex/sdk to the Node source for type checking; the page must get the package.
    tsconfigRaw: {},
    logLevel: "silent",
  });
  return result.outputFiles[0]?.text ?? "";
}

beforeAll(async () => {
  if (!existsSync(chromiumPath)) {
    throw new Error(`Chromium is missing at ${chromiumPath}: install it (apt-get install chromium) to run this test`);
  }
  // Each page: its path, and the script it loads.
  const pages = new Map([
    ["/", { src: "/page.js", script: await bundlePage("browser-page.ts") }],
    ["/input", { src: "/input-page.js", script: await bundlePage("browser-input-page.ts") }],
  ]);
  const scripts = new Map([...pages.values()].map((page) => [page.src, page.script]));
  const html = (src: string) =>
    `<!doctype html><meta charset="utf-8"><title>devex sdk</title><script type="module" src="${src}"></script>`;
  pageServer = http.createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://page").pathname;
    const page = pages.get(path);
    const script = scripts.get(path);
    if (page) res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html(page.src));
    else if (script) res.writeHead(200, { "content-type": "text/javascript" }).end(script);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => pageServer?.listen(0, "127.0.0.1", resolve));
  pageOrigin = `http://127.0.0.1:${(pageServer.address() as AddressInfo).port}`;
  [live, browser] = await Promise.all([
    startLiveCore(["--cors-origins", pageOrigin]),
    puppeteer.launch({ executablePath: chromiumPath, headless: true, args: ["--no-sandbox", "--headless=new"] }),
  ]);
});

afterAll(async () => {
  await browser?.close();
  await live?.close();
  await new Promise((resolve) => pageServer?.close(resolve));
});

describe("the SDK in a real browser", () => {
  it("lists templates, runs a repl, writes and reads a file, echoes in a terminal, stops and deletes, from another origin", async () => {
    if (!live || !browser) throw new Error("setup failed");
    const page = await browser.newPage();
    const consoleLines: string[] = [];
    page.on("console", (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
    page.on("pageerror", (error) => consoleLines.push(`pageerror: ${String(error)}`));
    const fragment = new URLSearchParams({
      baseUrl: live.core.url,
      apiKey: live.apiKey,
      replName: uniqueName("browser"),
    });
    await page.goto(`${pageOrigin}/#${fragment}`);
    await page.waitForFunction(() => "__devexResult" in globalThis, { timeout: 25_000 });
    const result = (await page.evaluate(
      () => (globalThis as { __devexResult?: unknown }).__devexResult,
    )) as BrowserPageResult;

    expect(result.error, consoleLines.join("\n")).toBeUndefined();
    expect(result.ok).toBe(true);
    expect(result.templates).toContain("blank");
    expect(result.startedState).toBe("running");
    expect(result.fileText).toBe("written in Chromium");
    expect(result.terminalOutput).toContain("browser-42");
    expect(result.upload).toEqual({
      sizeBytes: 9 * 1024 * 1024 + 7,
      identical: true,
      progressReports: 3,
      leftovers: [],
    });
    expect(result.stoppedState).toBe("stopped");
    expect(result.deleted).toBe(true);
    // The page is on another origin than core's API and repl origin: every call went through CORS.
    expect(new URL(live.core.url).origin).not.toBe(pageOrigin);
  });

  it("delivers an over-size write and writes whose request or answer failed, once each and in order, with no wait; a refused connection is UnavailableError", async () => {
    if (!live || !browser) throw new Error("setup failed");
    const page = await browser.newPage();
    const consoleLines: string[] = [];
    page.on("pageerror", (error) => consoleLines.push(`pageerror: ${String(error)}`));
    // A port where nothing listens.
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const fragment = new URLSearchParams({
      baseUrl: live.core.url,
      apiKey: live.apiKey,
      replName: uniqueName("browser-input"),
      closedPort: String(closedPort),
    });
    await page.goto(`${pageOrigin}/input#${fragment}`);
    await page.waitForFunction(() => "__devexInputResult" in globalThis, { timeout: 80_000 });
    const result = (await page.evaluate(
      () => (globalThis as { __devexInputResult?: unknown }).__devexInputResult,
    )) as BrowserInputResult;

    expect(result.error, consoleLines.join("\n")).toBeUndefined();
    expect(result.refused).toEqual({ name: "UnavailableError", code: "unavailable" });
    // Every write resolved, and none waited for a write before it that was never coming (10 s).
    for (const write of result.writes ?? []) {
      expect(write, write.label).toMatchObject({ outcome: "resolved" });
      expect(write.ms, write.label).toBeLessThan(3_000);
    }
    expect(result.writes?.map((write) => write.label)).toEqual([
      "over-size",
      "after over-size",
      "request failed",
      "answer lost",
      "after the failures",
    ]);
    // The program received every byte once, in order.
    expect(result.received).toEqual({
      sizeBytes: 1024 * 1024 + 16 + 8,
      expectedBytes: 1024 * 1024 + 16 + 8,
      identical: true,
      tail: "a|b|c|d|",
    });
  }, 90_000);
});
