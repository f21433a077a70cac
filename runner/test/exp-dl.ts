import { createHash } from "node:crypto";
import { openSync, writeSync, closeSync } from "node:fs";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { startTestRunner } from "./harness.js";
const t = await startTestRunner();
const c = await t.client(FilesystemService, { protocol: (process.env.PROTO as "grpc") ?? "grpc" });
const size = Number(process.env.MB ?? 256) * 1024 * 1024;
const fd = openSync(`${t.workspace}/big.bin`, "w");
const buf = Buffer.alloc(1024 * 1024, 7);
for (let i = 0; i < size; i += buf.length) writeSync(fd, buf);
closeSync(fd);
const base = process.memoryUsage().rss;
let peak = base;
const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 20);
const t0 = Date.now();
let n = 0;
const h = createHash("sha256");
for await (const m of c.download({ path: "big.bin" })) {
  if (m.kind.case === "chunk") { n++; h.update(m.kind.value); if (n % 64 === 0) console.log(n, Date.now() - t0, ((process.memoryUsage().rss - base) / 1e6).toFixed(0), ((globalThis as any).__served ?? 0)); }
}
clearInterval(timer);
console.log("ms", Date.now() - t0, "peakMB", (peak - base) / 1e6);
await t.close();
