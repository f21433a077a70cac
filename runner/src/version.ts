import { readFileSync } from "node:fs";

/** The runner's version, from its package.json. */
export const runnerVersion: string = (
  JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }
).version;
