/**
 * `npm run bench:persistence`: saving and restoring a workspace through the whole system,
 * against `tar` piped to the same compressor (zstd -3) on the same files, in the same run.
 *
 *   save      CreateSnapshot of a running repl whose workspace holds BENCH_FILES files
 *             (default 10,000) of BENCH_MB MB in total (default 100; a tenth random, the rest
 *             text): the runner archives it, core streams it into the filesystem workspace
 *             store; baseline `tar -C ws -c . | zstd -3 > file`
 *   restore   StartRepl of that repl (stopped) minus StartRepl of an empty repl, both measured
 *             here: core reads the snapshot and streams it into the new runner, which unpacks
 *             it beside the workspace, checks it and swaps it in; baseline
 *             `zstd -dc file | tar -C dir -x`
 *   memory    the peak resident memory (VmHWM) of the runner that saved (the process that
 *             archives) and of core (which streams), after the saves; and core's resident
 *             memory after each round, which should level off rather than climb
 *
 * Every timed step starts after `sync`, with nothing left to write back from the step before,
 * and each baseline runs right before the step it is compared with. Each figure is the
 * median of BENCH_ROUNDS rounds (default 3); the save line also lists each round's ratio.
 * Prints one JSON line per measurement, then the targets (save and restore at most 1.5x the
 * baseline, peak memory of the saving process under 150 MB). Not a test: figures vary with
 * the machine.
 */
import { execFile, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { cp, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { ReplService } from "@devex/gen/devex/core/v1/repl_pb.js";
import { startCoreProcess } from "../services/core/test/support/core-process.js";

const fileCount = Number(process.env.BENCH_FILES ?? 10_000);
const totalBytes = Number(process.env.BENCH_MB ?? 100) * 1024 * 1024;
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const execFileAsync = promisify(execFile);

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? Number.NaN;
const print = (line: Record<string, unknown>) => console.log(JSON.stringify(line));

/** A deterministic workspace: nested folders, text files of words and some random ones. */
async function generateWorkspace(root: string): Promise<void> {
  // mulberry32: a small deterministic generator with a full 32-bit period.
  let seed = 42;
  const random = () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const words = Array.from({ length: 4096 }, (_, i) => `w${i.toString(36)}`);
  const average = totalBytes / fileCount;
  for (let i = 0; i < fileCount; i++) {
    const dir = join(root, `d${i % 50}`, `s${Math.floor(i / 50) % 20}`);
    if (i < 1000) await mkdir(dir, { recursive: true });
    const size = Math.max(1, Math.round(average * (0.2 + 1.6 * random())));
    let body: Buffer;
    if (i % 10 === 0) {
      body = randomBytes(size);
    } else {
      const parts: string[] = [];
      let length = 0;
      while (length < size) {
        const word = words[Math.floor(random() * words.length)] ?? "w";
        parts.push(word);
        length += word.length + 1;
      }
      body = Buffer.from(parts.join(" ")).subarray(0, size);
    }
    await writeFile(join(dir, `f${i}.txt`), body);
  }
}

/**
 * Times `work`, which starts once the data the previous step wrote has reached the disk: the
 * kernel writes dirty pages back in the background, and a step should not pay for the last
 * one's (a restore leaves 100 MB behind it).
 */
async function timed(work: () => Promise<unknown>): Promise<number> {
  execFileSync("sync");
  const started = performance.now();
  await work();
  return performance.now() - started;
}

/** A process's peak resident memory (VmHWM), or its resident memory now (VmRSS), in MB. */
function rssMb(pid: number, which: "VmHWM" | "VmRSS" = "VmHWM"): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = new RegExp(`${which}:\\s+(\\d+) kB`).exec(status);
  return match ? Number(match[1]) / 1024 : Number.NaN;
}

const work = await mkdtemp(join(tmpdir(), "devex-bench-persistence-"));
const source = join(work, "ws");
await mkdir(source);
await generateWorkspace(source);
print({ workspace: { files: fileCount, bytes: totalBytes } });

// Core as `npm run core` runs it (its Node flags); runners as the local orchestrator runs them.
const core = await startCoreProcess(["--runner-standby-count", "0"], undefined, ["--max-semi-space-size=1"]);
try {
  const repls = core.client(ReplService, await core.devApiKey());
  const big = (await repls.createRepl({ name: "big", templateName: "blank" })).repl?.id ?? "";
  const empty = (await repls.createRepl({ name: "empty", templateName: "blank" })).repl?.id ?? "";
  await repls.startRepl({ replId: big });
  await cp(source, join(core.dataDir, "workspaces", big), { recursive: true });

  const baseline = { save: [] as number[], restore: [] as number[] };
  const system = { save: [] as number[], start: [] as number[], emptyStart: [] as number[] };
  let archiveBytes = 0;
  let runnerPeakMb = Number.NaN;
  // Core's resident memory after each round: it should level off, not climb round after round.
  const coreRssByRound: number[] = [];
  for (let round = 0; round < rounds; round++) {
    if (round > 0) await repls.startRepl({ replId: big });
    // Each baseline runs right before the step it is compared with, on a machine in the same state.
    const archive = join(work, "baseline.tar.zst");
    baseline.save.push(
      await timed(() => execFileAsync("bash", ["-c", `tar -C '${source}' -c . | zstd -3 -q -f -o '${archive}'`])),
    );
    const pid = Number(
      execFileSync("pgrep", ["-f", `repl-id ${big}`])
        .toString()
        .trim()
        .split("\n")[0],
    );
    let saved: Awaited<ReturnType<typeof repls.createSnapshot>> | undefined;
    system.save.push(
      await timed(async () => {
        saved = await repls.createSnapshot({ replId: big });
      }),
    );
    archiveBytes = Number(saved?.snapshot?.sizeBytes ?? 0);
    runnerPeakMb = rssMb(pid);
    await repls.stopRepl({ replId: big });
    const out = join(work, `restored-${round}`);
    await mkdir(out);
    baseline.restore.push(
      await timed(() => execFileAsync("bash", ["-c", `zstd -dc '${archive}' | tar -C '${out}' -x`])),
    );
    await rm(out, { recursive: true, force: true });
    system.start.push(await timed(() => repls.startRepl({ replId: big })));
    await repls.stopRepl({ replId: big });
    system.emptyStart.push(await timed(() => repls.startRepl({ replId: empty })));
    await repls.stopRepl({ replId: empty });
    coreRssByRound.push(Math.round(rssMb(core.service.child.pid ?? 0, "VmRSS")));
  }
  const corePeakMb = rssMb(core.service.child.pid ?? 0);

  const saveMs = median(system.save);
  const restoreMs = median(system.start) - median(system.emptyStart);
  const baseSaveMs = median(baseline.save);
  const baseRestoreMs = median(baseline.restore);
  // Each round's save against the baseline just before it: how much the ratio moves with the machine.
  const roundRatios = system.save.map((ms, round) => Number((ms / (baseline.save[round] ?? Number.NaN)).toFixed(2)));
  print({ measure: "save", ms: saveMs, baselineMs: baseSaveMs, ratio: saveMs / baseSaveMs, roundRatios, archiveBytes });
  print({
    measure: "restore",
    ms: restoreMs,
    startMs: median(system.start),
    emptyStartMs: median(system.emptyStart),
    baselineMs: baseRestoreMs,
    ratio: restoreMs / baseRestoreMs,
  });
  print({ measure: "memory", runnerPeakMb, corePeakMb, coreRssByRoundMb: coreRssByRound });
  const verdict = (ok: boolean) => (ok ? "met" : "NOT met");
  console.log(`
save     ${saveMs.toFixed(0)} ms vs ${baseSaveMs.toFixed(0)} ms: ${(saveMs / baseSaveMs).toFixed(2)}x (target <= 1.5x: ${verdict(saveMs <= 1.5 * baseSaveMs)})
restore  ${restoreMs.toFixed(0)} ms vs ${baseRestoreMs.toFixed(0)} ms: ${(restoreMs / baseRestoreMs).toFixed(2)}x (target <= 1.5x: ${verdict(restoreMs <= 1.5 * baseRestoreMs)})
memory   runner peak ${runnerPeakMb.toFixed(0)} MB, core peak ${corePeakMb.toFixed(0)} MB (target < 150 MB: ${verdict(runnerPeakMb < 150 && corePeakMb < 150)})`);
} finally {
  await core.stop();
  await core.cleanup();
  await rm(work, { recursive: true, force: true });
}
