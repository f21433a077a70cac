// A terminal: start a shell, type into it, watch its output, resize it, and wait for it to exit.
// Run: DEVEX_BASE_URL=... DEVEX_API_KEY=... npx tsx examples/terminal.ts
import { Devex } from "../src/index.js";

const devex = new Devex();
const repl = await (
  await devex.repls.create({ name: `terminal-${Date.now().toString(36)}`, template: "blank" })
).start();

const decoder = new TextDecoder();
let screen = "";
const terminal = await repl.terminal.create({
  cols: 100,
  rows: 30,
  onData: (data) => {
    screen += decoder.decode(data, { stream: true });
  },
});
await terminal.resize(120, 40);
await terminal.write("stty size; echo sum=$((40 + 2))\n");
await terminal.write("exit 3\n");
const exit = await terminal.wait();

console.log("saw size:", screen.includes("40 120"));
console.log("saw sum:", screen.includes("sum=42"));
console.log("exit code:", exit.exitCode);

await repl.stop();
await devex.repls.delete(repl.id);
