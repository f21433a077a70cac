#!/usr/bin/env node
/** The `devex` executable: runs the command line on this process's streams and exits with its status. */
import { runCli } from "./program.js";

const status = await runCli(process.argv.slice(2), {
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
});
// Exit once stdout is flushed, without waiting for idle HTTP/2 connections to close.
process.stdout.write("", () => process.exit(status));
