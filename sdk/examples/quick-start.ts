// Quick start: create a repl, start it, run a command, write and read a file, stop it.
// Run: DEVEX_BASE_URL=http://127.0.0.1:8080 DEVEX_API_KEY=dvx_... npx tsx examples/quick-start.ts
// (In your own project, import from "@devex/sdk".)
import { Devex } from "../src/index.js";

const devex = new Devex(); // reads DEVEX_API_KEY and DEVEX_BASE_URL

const templates = await devex.templates.list();
console.log("templates:", templates.map((t) => t.name).join(", "));

const created = await devex.repls.create({ name: `quick-start-${Date.now().toString(36)}`, template: "node" });
const repl = await created.start();
console.log("state:", repl.state);

const result = await repl.commands.run("node -e 'console.log(6 * 7)'");
console.log("stdout:", result.stdout.trim(), "exit:", result.exitCode);

await repl.fs.write("hello.txt", "Hello from the SDK\n");
console.log("file:", (await repl.fs.readText("hello.txt")).trim());

const { repl: stopped, snapshot } = await repl.stop();
console.log("stopped:", stopped.state, "saved:", snapshot?.id);

await devex.repls.delete(stopped.id);
