import { freePort } from "@devex/kit/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Devex, InvalidArgumentError } from "../src/index.js";
import { type LiveCore, startLiveCore, uniqueName } from "./support/live.js";

let live: LiveCore;
let devex: Devex;
let previewPort: number;

beforeAll(async () => {
  previewPort = await freePort();
  live = await startLiveCore(["--preview-port", String(previewPort)]);
  devex = new Devex({ baseUrl: live.core.url, apiKey: live.apiKey });
});
afterAll(async () => {
  await live?.close();
});

describe("previews", () => {
  it("shows a repl's ports, gives preview URLs and changes a port's visibility", async () => {
    const repl = await devex.repls.create({ name: uniqueName("web"), template: "node" });
    expect(repl.ports).toEqual([{ number: 3000, name: "web", protocol: "http", public: false }]);
    const host = `3000-${repl.id.replace("_", "-")}.localhost:${previewPort}`;

    const privateUrl = new URL(await repl.previewUrl(3000));
    expect(privateUrl.host).toBe(host);
    expect(privateUrl.searchParams.get("devex_preview_token")).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);

    const opened = await repl.setPortVisibility(3000, true);
    expect(opened.ports).toEqual([{ number: 3000, name: "web", protocol: "http", public: true }]);
    expect(await opened.previewUrl(3000)).toBe(`http://${host}/`);

    const closed = await opened.setPortVisibility(3000, false);
    expect(closed.ports[0]?.public).toBe(false);
    await expect(repl.previewUrl(0)).rejects.toBeInstanceOf(InvalidArgumentError);
    await devex.repls.delete(repl.id);
  });
});
