import { Context, type Platform } from "./internal/context.js";
import { ReplsModule } from "./repls.js";
import { TemplatesModule } from "./templates.js";
import type { DevexOptions, Repls, Templates } from "./types.js";

/** The Devex client: templates, and your repls with their files, commands and terminals. */
export class DevexClient {
  /** The templates repls are created from. */
  readonly templates: Templates;
  /** Your repls. */
  readonly repls: Repls;

  /** @internal */
  constructor(options: DevexOptions, platform: Platform) {
    const context = new Context(options, platform);
    this.templates = new TemplatesModule(context);
    this.repls = new ReplsModule(context);
  }
}
