import { formatBytes } from "./output.js";

/** A transfer's progress display. */
export interface ProgressBar {
  /** Bytes moved so far, and the total once known. */
  update(bytes: number, totalBytes?: number): void;
  /** Draws the final state and ends the line. */
  finish(): void;
}

/** Options of `createProgressBar`. */
export interface ProgressBarOptions {
  /** Where to draw (stderr); nothing is drawn unless `enabled`. */
  stream: NodeJS.WriteStream;
  /** What is moving, shown before the bar (a file name). */
  label: string;
  /** Draw only on a terminal and without `--json`; otherwise every call is a no-op. */
  enabled: boolean;
  /** Least time between two redraws, in ms; default 100. */
  redrawIntervalMs?: number;
  /** The clock, for tests; default `Date.now`. */
  now?: () => number;
}

/** A one-line bar redrawn in place with `\r`: label, bar, percent, bytes and rate. */
export function createProgressBar(options: ProgressBarOptions): ProgressBar {
  if (!options.enabled) return { update() {}, finish() {} };
  const now = options.now ?? Date.now;
  const redrawIntervalMs = options.redrawIntervalMs ?? 100;
  const startedAt = now();
  let drawnAt = Number.NEGATIVE_INFINITY;
  let bytes = 0;
  let total: number | undefined;

  const draw = () => {
    drawnAt = now();
    const seconds = Math.max((drawnAt - startedAt) / 1000, 0.001);
    const rate = `${formatBytes(Math.round(bytes / seconds))}/s`;
    const columns = options.stream.columns || 80;
    const amounts = total === undefined ? formatBytes(bytes) : `${formatBytes(bytes)}/${formatBytes(total)}`;
    const fraction = total ? Math.min(bytes / total, 1) : undefined;
    const percent = fraction === undefined ? "" : `${String(Math.floor(fraction * 100)).padStart(3)}%`;
    const tail = ` ${percent} ${amounts} ${rate}`;
    const barWidth = Math.max(columns - options.label.length - tail.length - 4, 0);
    let bar = "";
    if (barWidth >= 10 && fraction !== undefined) {
      const filled = Math.round(fraction * barWidth);
      bar = ` [${"#".repeat(filled)}${"-".repeat(barWidth - filled)}]`;
    }
    const line = `${options.label}${bar}${tail}`.slice(0, columns - 1);
    options.stream.write(`\r${line}\x1b[K`);
  };

  return {
    update(nextBytes, totalBytes) {
      bytes = nextBytes;
      if (totalBytes !== undefined) total = totalBytes;
      if (now() - drawnAt >= redrawIntervalMs) draw();
    },
    finish() {
      if (total !== undefined) bytes = Math.max(bytes, total);
      draw();
      options.stream.write("\n");
    },
  };
}
