/**
 * The baseline the terminal is measured against: the seed system's design, a raw
 * WebSocket relay around node-pty that sends one frame per PTY chunk. Started by
 * bench/terminal.ts as its own process; prints its port on stdout.
 */
import * as pty from "node-pty";
import { WebSocketServer } from "ws";

const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
server.on("connection", (socket, request) => {
  const command = new URL(request.url ?? "/", "http://x").searchParams.get("command") ?? "cat";
  const term = pty.spawn("bash", ["-c", command], { cols: 120, rows: 40, encoding: null } as pty.IPtyForkOptions);
  term.onData((data) => socket.send(data as unknown as Buffer));
  term.onExit(() => socket.close());
  socket.on("message", (data) => term.write(data as Buffer));
  socket.on("close", () => term.kill());
});
server.on("listening", () => {
  const address = server.address();
  if (address && typeof address === "object") console.log(address.port);
});
