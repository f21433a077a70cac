import { readFile } from "node:fs/promises";

/**
 * Whether the terminal of the session whose program is `pid` belongs to another process group
 * than the program's own: the session's shell is running a command in the foreground.
 *
 * Why the terminal's foreground process group rather than "the shell has a live child": a shell
 * with job control (bash, zsh, dash and fish in a terminal all have it) puts each foreground job
 * in a process group of its own, hands it the terminal, and takes the terminal back before it
 * prints its prompt. So the two groups differ exactly while a command runs, however quiet it is.
 * Children are a worse sign: background jobs (`npm run dev &`) and prompt helpers (zsh's
 * gitstatusd) live on while the shell waits at its prompt, and finding them means scanning all
 * of /proc. The kernel shows the terminal's foreground group (what tcgetpgrp on the PTY master
 * returns, which Node cannot call) as field 8, tpgid, of /proc/<pid>/stat: one short read.
 *
 * A program that is gone or a /proc that cannot be read counts as not busy: this feeds the idle
 * policy, which should not keep a repl running on a guess.
 */
export async function hasForegroundJob(pid: number): Promise<boolean> {
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, "utf8");
  } catch {
    return false;
  }
  // `pid (comm) state ppid pgrp session tty_nr tpgid ...`; comm may hold spaces and ")", so count from the last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const pgrp = Number(fields[2]);
  const tpgid = Number(fields[5]);
  return Number.isInteger(tpgid) && tpgid > 0 && tpgid !== pgrp;
}
