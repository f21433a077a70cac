// Files: upload a large file with progress, list, watch for a change, and download it back.
// Run: DEVEX_BASE_URL=... DEVEX_API_KEY=... npx tsx examples/files.ts
import { Devex } from "../src/index.js";

const devex = new Devex();
const repl = await (await devex.repls.create({ name: `files-${Date.now().toString(36)}`, template: "blank" })).start();

// 3 MiB of varied bytes.
const content = new Uint8Array(3 * 1024 * 1024).map((_, i) => (i * 31) % 251);
let lastProgress = 0;
await repl.fs.upload("data/blob.bin", content, {
  createParents: true,
  onProgress: (bytes) => {
    lastProgress = bytes;
  },
});
console.log("uploaded:", lastProgress, "bytes");

await repl.fs.write("data/notes.md", "# Notes\n");
console.log("listing:", (await repl.fs.list("data")).map((entry) => `${entry.name}:${entry.sizeBytes}`).join(" "));

// Watch the folder until the change we make shows up.
const watching = (async (): Promise<string | undefined> => {
  for await (const event of repl.fs.watch("data")) {
    if (event.path === "data/notes.md") return event.type;
  }
  return undefined;
})();
let seen: string | undefined;
while (seen === undefined) {
  await repl.fs.write("data/notes.md", "# Notes\n\nchanged\n");
  seen = await Promise.race([watching, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 200))]);
}
console.log("watched:", seen);

let received = 0;
let same = true;
for await (const chunk of repl.fs.download("data/blob.bin")) {
  same &&= chunk.every((byte, i) => byte === content[received + i]);
  received += chunk.length;
}
console.log("downloaded:", received, "bytes, identical:", same && received === content.length);

await repl.stop();
await devex.repls.delete(repl.id);
