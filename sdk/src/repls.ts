import { replStateValue } from "./convert.js";
import { NotFoundError } from "./errors.js";
import { allPages, type Context } from "./internal/context.js";
import { type Repl, toRepl } from "./repl.js";
import type { CallOptions, CreateReplOptions, ReplState, Repls } from "./types.js";

const replIdPattern = /^repl_[0-9a-z]{26}$/;

/** The repls module: create, get, list, delete. */
export class ReplsModule implements Repls {
  /** @internal */
  constructor(private readonly context: Context) {}

  async create(options: CreateReplOptions): Promise<Repl> {
    const { repl } = await this.context.call(
      (call) =>
        this.context.repls.createRepl(
          {
            name: options.name,
            templateName: options.template,
            idleTimeoutMs: options.idleTimeoutMs ?? 0,
            keepAwake: options.keepAwake ?? false,
            labels: options.labels ?? {},
          },
          call,
        ),
      options.signal,
      this.context.lifecycleTimeoutMs,
    );
    return toRepl(this.context, repl);
  }

  async get(idOrName: string, options: CallOptions = {}): Promise<Repl> {
    const { repl } = await this.context.call(
      (call) =>
        this.context.repls.getRepl(
          {
            repl: replIdPattern.test(idOrName)
              ? { case: "replId", value: idOrName }
              : { case: "name", value: idOrName },
          },
          call,
        ),
      options.signal,
    );
    return toRepl(this.context, repl);
  }

  list(options: { states?: ReplState[]; labels?: Record<string, string> } & CallOptions = {}): Promise<Repl[]> {
    const states = (options.states ?? []).map(replStateValue);
    const labels = options.labels ?? {};
    return this.context.call(
      (call) =>
        allPages(async (pageToken) => {
          const response = await this.context.repls.listRepls({ states, labels, pageToken, pageSize: 1000 }, call);
          return { items: response.repls.map((repl) => toRepl(this.context, repl)), next: response.nextPageToken };
        }),
      options.signal,
    );
  }

  async delete(idOrName: string, options: { allowMissing?: boolean } & CallOptions = {}): Promise<void> {
    const { allowMissing = false, signal } = options;
    let replId = idOrName;
    if (!replIdPattern.test(idOrName)) {
      try {
        replId = (await this.get(idOrName, { signal })).id;
      } catch (error) {
        if (allowMissing && error instanceof NotFoundError) return;
        throw error;
      }
    }
    await this.context.call(
      (call) => this.context.repls.deleteRepl({ replId, allowMissing }, call),
      signal,
      this.context.lifecycleTimeoutMs,
    );
  }
}
