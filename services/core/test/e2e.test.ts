import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ReplService, ReplState, ReplStopReason } from "@devex/gen/devex/core/v1/repl_pb.js";
import { TemplateService } from "@devex/gen/devex/core/v1/template_pb.js";
import { FilesystemService } from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import { SessionSpecSchema, TerminalService } from "@devex/gen/devex/runner/v1/terminal_pb.js";
import { processExists } from "@devex/kit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AttachClient } from "../../../runner/test/attach-client.js";
import { type CoreProcess, startCoreProcess } from "./support/core-process.js";

let core: CoreProcess;
let apiKey: string;

beforeAll(async () => {
  core = await startCoreProcess();
  apiKey = await core.devApiKey();
});
afterAll(async () => {
  await core?.stop();
  await core?.cleanup();
});

/** Clients of a repl's runner API through core's repl origin, with the runner token core handed out. */
function runnerClients(endpointUrl: string, token: string) {
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport = createGrpcTransport({ baseUrl: endpointUrl, interceptors: [auth] });
  return { terminal: createClient(TerminalService, transport), files: createClient(FilesystemService, transport) };
}

describe("the whole system, end to end", () => {
  it("creates, starts, runs a command in the terminal, writes a file, stops, starts, and the file is still there", async () => {
    const repls = core.client(ReplService, apiKey);
    const templates = await core.client(TemplateService, apiKey).listTemplates({});
    expect(templates.templates.map((t) => t.name)).toEqual(expect.arrayContaining(["blank", "node", "python"]));

    const { repl } = await repls.createRepl({ name: "e2e", templateName: "blank" });
    expect(repl?.state).toBe(ReplState.CREATED);
    const replId = repl?.id ?? "";

    const started = await repls.startRepl({ replId });
    expect(started.repl?.state).toBe(ReplState.RUNNING);
    const access = started.access;
    expect(access?.endpointUrl).toBe(`${core.replUrl}/${replId}/`);
    const first = runnerClients(access?.endpointUrl ?? "", access?.token ?? "");

    // The template's files are there from the start.
    const readme = await first.files.readFile({ path: "README.md" });
    expect(Buffer.from(readme.content).toString()).toContain("blank repl");

    // A command typed into a shell through the bidirectional Attach stream, routed by core.
    const attach = new AttachClient(first.terminal, {
      target: { case: "create", value: create(SessionSpecSchema, { cols: 80, rows: 24 }) },
    });
    await attach.until((c) => c.of("attached").length > 0, "attached");
    attach.type("echo e2e-$((6*7))\n");
    await attach.waitForText("e2e-42");
    await attach.disconnect();

    await first.files.writeFile({
      path: "notes/today.txt",
      content: Buffer.from("kept across restarts\n"),
      createParents: true,
    });

    const stopped = await repls.stopRepl({ replId });
    expect(stopped.repl?.state).toBe(ReplState.STOPPED);
    // The runner is gone: its access is refused and the route answers Unavailable or NotFound.
    await expect(repls.getReplAccess({ replId })).rejects.toMatchObject({ code: Code.FailedPrecondition });
    const afterStop = await first.files.stat({ path: "README.md" }).then(
      () => "ok",
      (error: unknown) => ConnectError.from(error).code,
    );
    expect([Code.Unavailable, Code.NotFound]).toContain(afterStop);

    const again = await repls.startRepl({ replId });
    expect(again.repl?.state).toBe(ReplState.RUNNING);
    const record = JSON.parse(await readFile(join(core.dataDir, "runners", `${replId}.workspace.json`), "utf8")) as {
      workspace: string;
    };
    const second = runnerClients(again.access?.endpointUrl ?? "", again.access?.token ?? "");
    const kept = await second.files.readFile({ path: "notes/today.txt" });
    expect(Buffer.from(kept.content).toString()).toBe("kept across restarts\n");

    // Delete stops the runner and removes the workspace; a second delete with allow_missing is fine.
    await repls.deleteRepl({ replId });
    await expect(repls.getRepl({ repl: { case: "replId", value: replId } })).rejects.toMatchObject({
      code: Code.NotFound,
    });
    await repls.deleteRepl({ replId, allowMissing: true });
    await expect(stat(record.workspace)).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("stops every runner when core stops", async () => {
    const repls = core.client(ReplService, apiKey);
    const ids: string[] = [];
    for (const name of ["last-a", "last-b"]) {
      const { repl } = await repls.createRepl({ name, templateName: "blank" });
      await repls.startRepl({ replId: repl?.id ?? "" });
      ids.push(repl?.id ?? "");
    }
    const records = (await readdir(join(core.dataDir, "runners"))).filter((file) => !file.endsWith(".workspace.json"));
    const pids = await Promise.all(
      records.map(
        async (file) =>
          (JSON.parse(await readFile(join(core.dataDir, "runners", file), "utf8")) as { pid: number }).pid,
      ),
    );
    expect(pids.length).toBe(2);
    expect(pids.every(processExists)).toBe(true);
    expect(await core.stop("SIGINT")).toBe(0);
    expect(pids.filter(processExists)).toEqual([]);
  });
});

describe("a restarted core", () => {
  it("keeps users, keys, repls and workspaces, and says why the repl stopped", async () => {
    const first = await startCoreProcess();
    let second: CoreProcess | undefined;
    try {
      const key = await first.devApiKey();
      const repls = first.client(ReplService, key);
      const { repl } = await repls.createRepl({ name: "survivor", templateName: "python" });
      const replId = repl?.id ?? "";
      const { access } = await repls.startRepl({ replId });
      const { files } = runnerClients(access?.endpointUrl ?? "", access?.token ?? "");
      await files.writeFile({ path: "data.txt", content: Buffer.from("still here") });
      expect(await first.stop("SIGINT")).toBe(0);

      second = await startCoreProcess([], first.dataDir);
      expect(await second.devApiKey()).toBe(key);
      const again = second.client(ReplService, key);
      const { repl: after } = await again.getRepl({ repl: { case: "name", value: "survivor" } });
      expect(after?.id).toBe(replId);
      expect(after?.state).toBe(ReplState.STOPPED);
      expect(after?.stopReason).toBe(ReplStopReason.SYSTEM);
      const restarted = await again.startRepl({ replId });
      const reopened = runnerClients(restarted.access?.endpointUrl ?? "", restarted.access?.token ?? "");
      expect(Buffer.from((await reopened.files.readFile({ path: "data.txt" })).content).toString()).toBe("still here");
      expect(Buffer.from((await reopened.files.readFile({ path: "main.py" })).content).toString()).toContain(
        "HTTPServer",
      );
    } finally {
      await (second ?? first).stop();
      await first.cleanup();
    }
  });
});

describe("idle stop", () => {
  it("stops a repl whose runner reports no activity for its idle timeout, and not one with a client attached", async () => {
    const idleCore = await startCoreProcess(["--idle-timeout-ms", "1500", "--idle-check-interval-ms", "200"]);
    try {
      const repls = idleCore.client(ReplService, await idleCore.devApiKey());
      const busy = (await repls.createRepl({ name: "busy", templateName: "blank" })).repl?.id ?? "";
      const quiet = (await repls.createRepl({ name: "quiet", templateName: "blank" })).repl?.id ?? "";
      const busyAccess = (await repls.startRepl({ replId: busy })).access;
      await repls.startRepl({ replId: quiet });
      const { terminal } = runnerClients(busyAccess?.endpointUrl ?? "", busyAccess?.token ?? "");
      const attach = new AttachClient(terminal, {
        target: { case: "create", value: create(SessionSpecSchema, { cols: 80, rows: 24 }) },
      });
      await attach.until((c) => c.of("attached").length > 0, "attached");

      const deadline = Date.now() + 15_000;
      let quietState = ReplState.RUNNING;
      while (Date.now() < deadline && quietState !== ReplState.STOPPED) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        quietState = (await repls.getRepl({ repl: { case: "replId", value: quiet } })).repl?.state ?? quietState;
      }
      const stopped = (await repls.getRepl({ repl: { case: "replId", value: quiet } })).repl;
      expect(stopped?.state).toBe(ReplState.STOPPED);
      expect(stopped?.stopReason).toBe(ReplStopReason.IDLE);
      // The repl with a terminal client attached is still running well past its timeout.
      expect((await repls.getRepl({ repl: { case: "replId", value: busy } })).repl?.state).toBe(ReplState.RUNNING);
      await attach.disconnect();
    } finally {
      await idleCore.stop();
      await idleCore.cleanup();
    }
  });
});
