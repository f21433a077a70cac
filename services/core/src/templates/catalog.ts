/** A repl template, as its `templates/<name>/template.json` manifest declares it, and where its files are stored. */
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
  /** The sandbox limits of its repls; each unset one is the server's default. */
  resources?: { memoryBytes?: number; cpuMillicores?: number; maxProcesses?: number };
  /** Total bytes of the files. */
  sizeBytes: number;
  updatedAtMs: number;
  /** The archive of the files in the workspace store: a new repl's first snapshot is a copy of it. */
  archive: TemplateArchive;
}

/** A template's files as one reproducible zstd tar archive in the workspace store. */
export interface TemplateArchive {
  /** The workspace-store key (`templates/<name>/archives/<sha256>.tar.zst`). */
  key: string;
  /** SHA-256 of the archive, lowercase hex: the same files give the same archive. */
  sha256: string;
  bytes: number;
  fileCount: number;
  directoryCount: number;
  symlinkCount: number;
  contentBytes: number;
}

/** The templates repls are created from. */
export interface TemplateCatalog {
  /** Every template, sorted by name. */
  list(): Promise<TemplateRecord[]>;
  /** The template with exactly this name (never a prefix match), or undefined. */
  get(name: string): Promise<TemplateRecord | undefined>;
}
