/**
 * Limits on the calls in flight through the repl origin, per client and per repl, so that
 * one client's flood leaves room for the others: the excess is refused at once with
 * ResourceExhausted instead of piling up on the runner.
 */

import { Code, ConnectError } from "@connectrpc/connect";

/** Options for {@link createCallLimits}. */
export interface CallLimitsOptions {
  /** Calls one client may have in flight at once, across repls. */
  maxCallsPerClient: number;
  /** Calls one repl may have in flight at once, from every client. */
  maxCallsPerRepl: number;
}

/** Counts the calls in flight and refuses the ones over a limit. */
export interface CallLimits {
  /**
   * Takes a place for a call of `client` to `replId`, and returns the function that gives it
   * back (once, however often it is called). Throws ResourceExhausted when either is full.
   */
  admit(client: string, replId: string): () => void;
}

/** Creates the limits on calls in flight. */
export function createCallLimits(options: CallLimitsOptions): CallLimits {
  const byClient = new Map<string, number>();
  const byRepl = new Map<string, number>();
  const add = (counts: Map<string, number>, key: string, delta: number) => {
    const next = (counts.get(key) ?? 0) + delta;
    if (next > 0) counts.set(key, next);
    else counts.delete(key);
  };
  return {
    admit(client, replId) {
      if ((byClient.get(client) ?? 0) >= options.maxCallsPerClient) {
        throw new ConnectError(
          `too many calls in flight from this client (at most ${options.maxCallsPerClient} at once); retry once some have finished`,
          Code.ResourceExhausted,
        );
      }
      if ((byRepl.get(replId) ?? 0) >= options.maxCallsPerRepl) {
        throw new ConnectError(
          `too many calls in flight to ${replId} (at most ${options.maxCallsPerRepl} at once, from all its clients); retry once some have finished`,
          Code.ResourceExhausted,
        );
      }
      add(byClient, client, 1);
      add(byRepl, replId, 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        add(byClient, client, -1);
        add(byRepl, replId, -1);
      };
    },
  };
}
