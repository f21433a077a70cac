/**
 * The WebSocket relay's design over HTTP/2 instead: node:http2 with nothing on top (no gRPC
 * framing, no Connect), one request stream per terminal, one DATA write per PTY chunk. It
 * shows what HTTP/2 itself costs against the WebSocket relay, apart from what Connect adds.
 * Started by bench/terminal.ts as its own process; prints its port on stdout.
 */
import * as http2 from "node:http2";
import * as pty from "node-pty";

const server = http2.createServer();
server.on("stream", (stream, headers) => {
  const command = new URL(headers[":path"] ?? "/", "http://x").searchParams.get("command") ?? "cat";
  const term = pty.spawn("bash", ["-c", command], { cols: 120, rows: 40, encoding: null } as pty.IPtyForkOptions);
  stream.respond({ ":status": 200 });
  // Output that comes after the client has gone is dropped, as the WebSocket relay drops it.
  term.onData((data) => {
    if (!stream.closed) stream.write(data as unknown as Buffer);
  });
  term.onExit(() => {
    if (!stream.closed) stream.end();
  });
  stream.on("data", (data: Buffer) => term.write(data));
  stream.on("close", () => term.kill());
  stream.on("error", () => term.kill());
});
server.on("sessionError", () => {});
server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  if (address && typeof address === "object") console.log(address.port);
});
