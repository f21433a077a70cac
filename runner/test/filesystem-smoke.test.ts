import { createHash, randomBytes } from "node:crypto";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { it, expect } from "vitest";
import { startTestRunner } from "./harness.js";
it("big", async () => {
  const t = await startTestRunner();
  const c = await t.client(FilesystemService);
  const total = Number(process.env.BIG ?? 1024) * 1024 * 1024;
  const chunkSize = 1024 * 1024;
  const base = randomBytes(chunkSize);
  const hash = createHash("sha256");
  const baseline = process.memoryUsage().rss;
  let peak = baseline;
  const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 50);
  async function* gen() {
    yield { kind: { case: "header" as const, value: { path: "big.bin", sizeBytes: BigInt(total) } } };
    for (let off = 0; off < total; off += chunkSize) {
      const chunk = Buffer.from(base);
      chunk.writeUInt32LE(off / chunkSize, 0);
      hash.update(chunk);
      yield { kind: { case: "chunk" as const, value: chunk } };
    }
  }
  let t0 = Date.now();
  const res = await c.upload(gen());
  const up = Date.now() - t0;
  console.log("upload ms", up, "peak MB", (peak - baseline) / 1e6, res.writtenBytes);
  const want = hash.digest("hex");
  expect(res.sha256).toBe(want);
  t0 = Date.now();
  const h2 = createHash("sha256");
  let trailer = "";
  let peak2base = process.memoryUsage().rss; peak = peak2base;
  for await (const m of c.download({ path: "big.bin" })) {
    if (m.kind.case === "chunk") h2.update(m.kind.value);
    if (m.kind.case === "trailer") trailer = m.kind.value.sha256;
  }
  console.log("download ms", Date.now() - t0, "peak MB", (peak - peak2base) / 1e6);
  clearInterval(timer);
  expect(h2.digest("hex")).toBe(want);
  expect(trailer).toBe(want);
  await t.close();
}, 300_000);
