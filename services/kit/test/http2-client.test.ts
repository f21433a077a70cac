import { once } from "node:events";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { Http2SessionManager } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WideWindowSessionManager } from "../src/http2-client.js";

const KIB = 1024;

/**
 * A peer that sends 768 KiB on every stream the client opens, none of which the client
 * reads: how much of it leaves the server shows the windows the client gave it.
 */
describe("WideWindowSessionManager", () => {
  let server: http2.Http2Server;
  let url: string;
  /** Bytes each server stream could not send yet (held by flow control), by request path. */
  const held = new Map<string, PromiseWithResolvers<number>>();

  beforeAll(async () => {
    server = http2.createServer();
    server.on("stream", (stream, headers) => {
      stream.on("error", () => {}); // the client cancels every stream
      stream.respond({ ":status": 200 });
      stream.write(Buffer.alloc(768 * KIB));
      setTimeout(() => held.get(String(headers[":path"]))?.resolve(stream.writableLength), 300);
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => {
    server.close();
  });

  async function heldBack(manager: Http2SessionManager, path: string) {
    held.set(path, Promise.withResolvers());
    const stream = await manager.request("POST", path, {}, {});
    stream.on("error", () => {});
    const bytes = await held.get(path)?.promise;
    const windows = { stream: stream.state.localWindowSize, connection: stream.session?.state.localWindowSize };
    stream.close(http2.constants.NGHTTP2_CANCEL);
    await once(stream, "close");
    manager.abort();
    return { bytes, windows };
  }

  it("lets the peer send a whole window without being read", async () => {
    const wide = await heldBack(
      new WideWindowSessionManager(url, { streamWindowBytes: 1024 * KIB, connectionWindowBytes: 8192 * KIB }),
      "/wide",
    );
    expect(wide.bytes).toBe(0);
    expect(wide.windows.stream).toBe(1024 * KIB - 768 * KIB);
    expect(wide.windows.connection).toBeGreaterThan(7 * 1024 * KIB);
  });

  it("where Node's default windows hold all but 64 KiB back", async () => {
    const narrow = await heldBack(new Http2SessionManager(url), "/narrow");
    expect(narrow.bytes).toBeGreaterThan(700 * KIB);
  });

  it("never opens the connection window below the stream window", async () => {
    const result = await heldBack(
      new WideWindowSessionManager(url, { streamWindowBytes: 1024 * KIB, connectionWindowBytes: 64 * KIB }),
      "/small-connection",
    );
    expect(result.bytes).toBe(0);
  });
});
