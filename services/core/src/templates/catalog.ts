/** A repl template, as its `templates/<name>/template.json` manifest declares it. */
export interface TemplateRecord {
  /** The folder name; exact match only (`node` never takes `nodejs`). */
  name: string;
  displayName: string;
  description: string;
  /** The runner image the Kubernetes driver uses. */
  runnerImage: string;
  /** What the repl runs when started (shown to users; the terminal's default command). */
  startCommand: string;
  ports: { number: number; name: string; protocol: "http" | "tcp" }[];
  language: string;
  tags: string[];
  /** The folder holding the files a new repl starts with. */
  filesDir: string;
  /** Total bytes of the files. */
  sizeBytes: number;
  updatedAtMs: number;
}

/** The templates repls are created from. */
export interface TemplateCatalog {
  /** Every template, sorted by name. */
  list(): Promise<TemplateRecord[]>;
  /** The template with exactly this name, or undefined. */
  get(name: string): Promise<TemplateRecord | undefined>;
  /** Copies the template's files into an empty workspace directory. */
  seed(name: string, workspaceDir: string): Promise<void>;
}
