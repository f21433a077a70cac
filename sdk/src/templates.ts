import { toTemplate } from "./convert.js";
import { allPages, type Context } from "./internal/context.js";
import type { CallOptions, Template, Templates } from "./types.js";

/** The templates module: list and get. */
export class TemplatesModule implements Templates {
  /** @internal */
  constructor(private readonly context: Context) {}

  list(options: { tag?: string } & CallOptions = {}): Promise<Template[]> {
    const { signal, tag = "" } = options;
    return this.context.call(
      (call) =>
        allPages(async (pageToken) => {
          const response = await this.context.templates.listTemplates({ tag, pageToken, pageSize: 1000 }, call);
          return { items: response.templates.map(toTemplate), next: response.nextPageToken };
        }),
      signal,
    );
  }

  async get(name: string, options: CallOptions = {}): Promise<Template> {
    const { template } = await this.context.call(
      (call) => this.context.templates.getTemplate({ name }, call),
      options.signal,
    );
    if (!template) throw this.context.error(new Error("core returned no template"));
    return toTemplate(template);
  }
}
