import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CliHarness, startCliHarness } from "./harness.js";
import { ScreenUnderTest } from "./screen.js";

/**
 * `devex shell` when its connection to the repl drops: the repl origin is reached through a TCP
 * forwarder the test controls, which cuts every connection at once in the middle of a stream of
 * output. The SDK reattaches from the offset of the next byte not shown, so the screen shows
 * every line once, in order, and the shell keeps working.
 */
class Forwarder {
  private readonly sockets = new Set<Socket>();
  target = 0;
  drops = 0;
  readonly server: Server = createServer((client) => {
    const upstream = tcpConnect(this.target, "127.0.0.1");
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.once("close", () => this.sockets.delete(socket));
      socket.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
  });

  listen(): Promise<number> {
    return new Promise((resolve) => {
      this.server.listen(0, "127.0.0.1", () => {
        const address = this.server.address();
        resolve(typeof address === "object" && address ? address.port : 0);
      });
    });
  }

  /** Cuts every open connection, as a network failure would. */
  dropAll(): void {
    this.drops++;
    for (const socket of this.sockets) socket.destroy();
  }

  close(): void {
    this.dropAll();
    this.server.close();
  }
}

let h: CliHarness;
const forwarder = new Forwarder();
let screen: ScreenUnderTest | undefined;

beforeAll(async () => {
  const port = await forwarder.listen();
  h = await startCliHarness(["--repl-public-url", `http://127.0.0.1:${port}`]);
  forwarder.target = Number(new URL(h.core.replUrl).port);
  await h.login();
  const created = await h.devex(["create", "dropped", "--template", "blank", "--start"]);
  if (created.status !== 0) throw new Error(created.stderr);
});
afterAll(async () => {
  screen?.kill();
  forwarder.close();
  await h?.close();
});

describe("devex shell over a connection that drops", () => {
  it("reattaches by itself: every line of output once, in order, and the shell still answers", async () => {
    screen = new ScreenUnderTest(h, ["shell", "dropped"], {}, 80, 24);
    await screen.waitFor(/[$#] *$/m);
    screen.type("for i in $(seq 1 60); do echo line-$i; sleep 0.02; done; echo finished\r");
    await screen.waitFor(/^line-10$/m);
    forwarder.dropAll();
    await screen.waitFor(/^finished$/m, 30_000);
    const lines = screen
      .text()
      .split("\n")
      .filter((line) => /^line-\d+$/.test(line));
    expect(lines).toEqual(Array.from({ length: 60 }, (_, i) => `line-${i + 1}`));

    screen.type("echo still-$((6*7))\r");
    await screen.waitFor(/^still-42$/m);
    screen.type("exit 0\r");
    await screen.waitFor("STATUS=0");
    expect(screen.text()).toContain("TTY-RESTORED");
    expect(forwarder.drops).toBe(1);
  });
});
