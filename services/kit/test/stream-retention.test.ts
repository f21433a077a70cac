import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { type DownloadResponse, FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { afterEach, describe, expect, it } from "vitest";
import { createLogger, type Server, startServer } from "../src/index.js";

// A client reading a long stream must not keep the messages it has read. Connect's
// streaming calls used to race every read against a promise that settles only when the
// call ends, which kept each message read (a terminal's output, an archive's chunks)
// until then; the project patches that (patches/@connectrpc+connect+*.patch).

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

const chunkBytes = 256 * 1024;
const chunkCount = 40;

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close(100)));
});

/** A server whose Download sends `chunkCount` chunks, then waits for `release` before ending. */
async function start(): Promise<{ server: Server; release: () => void }> {
  let release: () => void = () => {};
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  const server = await startServer({
    name: "test",
    logger: createLogger({ service: "test", level: "silent" }),
    port: 0,
    routes: (router) =>
      router.service(FilesystemService, {
        async *download() {
          for (let i = 0; i < chunkCount; i++) {
            yield { kind: { case: "chunk", value: new Uint8Array(chunkBytes).fill(i) } };
          }
          await released;
        },
      }),
  });
  servers.push(server);
  return { server, release };
}

describe("a streaming client", () => {
  const cases: Record<string, (url: string) => Transport> = {
    "gRPC over h2c": (url) => createGrpcTransport({ baseUrl: url }),
    "Connect over HTTP/1.1": (url) => createConnectTransport({ baseUrl: url, httpVersion: "1.1" }),
  };
  for (const [name, transportOf] of Object.entries(cases)) {
    it(`lets go of the messages it has read while the stream is still open (${name})`, async () => {
      const { server, release } = await start();
      const client = createClient(FilesystemService, transportOf(server.url));
      const read: WeakRef<DownloadResponse>[] = [];
      const iterator = client.download({ path: "x" })[Symbol.asyncIterator]();
      for (let i = 0; i < chunkCount; i++) {
        const next = await iterator.next();
        expect(next.done).toBe(false);
        const message = next.value as DownloadResponse;
        expect(message.kind.case).toBe("chunk");
        expect((message.kind.value as Uint8Array)[0]).toBe(i);
        read.push(new WeakRef(message));
      }
      // The stream is still open (the server waits): every message but the latest is garbage.
      for (let round = 0; round < 5; round++) {
        await new Promise((resolve) => setImmediate(resolve));
        gc();
      }
      const kept = read.filter((ref) => ref.deref() !== undefined).length;
      expect(kept, `${kept} of ${chunkCount} messages read are still held`).toBeLessThanOrEqual(2);
      release();
      expect((await iterator.next()).done).toBe(true);
    });
  }
});
