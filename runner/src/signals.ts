import { Signal } from "@devex/gen/devex/runner/v1/runner_pb.js";

const names: Record<Exclude<Signal, Signal.UNSPECIFIED>, NodeJS.Signals> = {
  [Signal.TERM]: "SIGTERM",
  [Signal.KILL]: "SIGKILL",
  [Signal.INT]: "SIGINT",
  [Signal.HUP]: "SIGHUP",
  [Signal.QUIT]: "SIGQUIT",
  [Signal.USR1]: "SIGUSR1",
  [Signal.USR2]: "SIGUSR2",
  [Signal.STOP]: "SIGSTOP",
  [Signal.CONT]: "SIGCONT",
  [Signal.WINCH]: "SIGWINCH",
};

/** The POSIX signal of a contract signal; `fallback` for SIGNAL_UNSPECIFIED. */
export function toNodeSignal(signal: Signal, fallback: NodeJS.Signals): NodeJS.Signals {
  return signal === Signal.UNSPECIFIED ? fallback : names[signal];
}
