import type { Repl, SkippedEntry, Snapshot } from "@devex/sdk";

/** Where a command writes: results on stdout (a table or JSON), messages and progress on stderr. */
export interface Output {
  /** `--json`: print each result as JSON on stdout and nothing else there. */
  readonly json: boolean;
  readonly stdout: NodeJS.WriteStream;
  readonly stderr: NodeJS.WriteStream;
}

/** Prints a line of text on stdout. */
export function printLine(output: Output, text: string): void {
  output.stdout.write(`${text}\n`);
}

/** Prints a result as indented JSON on stdout (dates as ISO 8601 strings). */
export function printJson(output: Output, value: unknown): void {
  output.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Prints a human message on stderr (kept off stdout so scripts can read results there). */
export function printNotice(output: Output, text: string): void {
  output.stderr.write(`${text}\n`);
}

/** Left-aligned columns two spaces apart, headers first; the last column is not padded. */
export function formatTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((header, column) =>
    Math.max(header.length, ...rows.map((row) => (row[column] ?? "").length)),
  );
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(headers), ...rows.map(line)].join("\n");
}

/** "just now", "42s ago", "5m ago", "3h ago", "2d ago". */
export function formatRelativeTime(date: Date, now: Date = new Date()): string {
  const seconds = Math.round((now.getTime() - date.getTime()) / 1000);
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86_400)}d ago`;
}

/** Bytes with binary units: "512 B", "1.5 KiB", "12.0 MiB". */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} ${units[0]}` : `${value.toFixed(1)} ${units[unit]}`;
}

/** When a repl was last in use: the last activity core saw, else when it last stopped, started or changed. */
export function lastActive(repl: Repl, now: Date = new Date()): string {
  const at = repl.lastActiveAt ?? repl.lastStoppedAt ?? repl.lastStartedAt ?? repl.updatedAt;
  return formatRelativeTime(at, now);
}

/** A repl's public fields as plain JSON (the SDK object also carries clients and methods). */
export function replToJson(repl: Repl): Record<string, unknown> {
  return {
    id: repl.id,
    name: repl.name,
    templateName: repl.templateName,
    state: repl.state,
    version: repl.version,
    failureReason: repl.failureReason || undefined,
    createdAt: repl.createdAt,
    updatedAt: repl.updatedAt,
    lastStartedAt: repl.lastStartedAt,
    lastStoppedAt: repl.lastStoppedAt,
    lastActiveAt: repl.lastActiveAt,
    idleTimeoutMs: repl.idleTimeoutMs,
    keepAwake: repl.keepAwake,
    currentSnapshotId: repl.currentSnapshotId || undefined,
    labels: repl.labels,
  };
}

const skipReasonPhrases: Record<SkippedEntry["reason"], string> = {
  fifo: "a FIFO",
  socket: "a socket",
  device: "a device",
  unreadable: "unreadable",
  unknown: "for a reason this devex does not know",
};

/**
 * A warning naming what a snapshot left out of the workspace (FIFOs, sockets, devices, what the
 * repl's user may not read), or undefined when it saved everything.
 */
export function skippedEntriesWarning(snapshot: Snapshot): string | undefined {
  if (snapshot.skippedEntryCount === 0) return undefined;
  const named = snapshot.skippedEntries.map((entry) => `${entry.path} (${skipReasonPhrases[entry.reason]})`);
  const more = snapshot.skippedEntryCount - named.length;
  const entries = snapshot.skippedEntryCount === 1 ? "1 entry" : `${snapshot.skippedEntryCount} entries`;
  return `warning: snapshot ${snapshot.id} left out ${entries} of the workspace: ${named.join(", ")}${more > 0 ? `, and ${more} more` : ""}`;
}
