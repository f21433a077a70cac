import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod/mini";

const namePattern = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** The manifest of a template (`templates/<name>/template.json`). */
export const manifestSchema = z.object({
  name: z.string().check(z.regex(namePattern, "must be lower-case letters, digits and dashes")),
  displayName: z.string().check(z.minLength(1), z.maxLength(128)),
  description: z.string().check(z.maxLength(1024)),
  runnerImage: z.string().check(z.minLength(1)),
  startCommand: z.string(),
  ports: z.array(
    z.object({
      number: z.number().check(z.int(), z.gte(1), z.lte(65535)),
      name: z.string().check(z.regex(namePattern)),
      protocol: z.enum(["http", "tcp"]),
    }),
  ),
  language: z.string(),
  tags: z.array(z.string().check(z.regex(namePattern))),
  /** The sandbox limits of its repls; each unset one is the server's default. */
  resources: z.optional(
    z.object({
      memoryBytes: z.optional(z.number().check(z.int(), z.gte(64 * 1024 * 1024))),
      cpuMillicores: z.optional(z.number().check(z.int(), z.gte(100), z.lte(256_000))),
      maxProcesses: z.optional(z.number().check(z.int(), z.gte(16), z.lte(65_536))),
    }),
  ),
});

/** A template folder that could not be loaded. */
export class TemplateError extends Error {
  override name = "TemplateError";
}

/** A template's manifest as its folder declares it (`template.json`). */
export type TemplateManifest = z.infer<typeof manifestSchema>;

/** A template folder: its manifest and the folder of files a new repl starts with. */
export interface TemplateFolder {
  manifest: TemplateManifest;
  filesDir: string;
  /** Total bytes of the files. */
  sizeBytes: number;
  /** The latest modification of the manifest or a file, in ms since the epoch. */
  updatedAtMs: number;
}

/**
 * The templates of a `templates/` folder, sorted by name: each subfolder holds a
 * `template.json` manifest (whose name must equal the folder's) and a `files/` folder.
 * Manifests are validated here, so a broken template fails the sync with a message naming
 * it, not a user's create later.
 */
export async function loadTemplateFolders(directory: string): Promise<TemplateFolder[]> {
  const folders: TemplateFolder[] = [];
  for (const entry of await readdir(directory, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    folders.push(await loadTemplate(join(directory, entry.name), entry.name));
  }
  return folders.sort((a, b) => (a.manifest.name < b.manifest.name ? -1 : 1));
}

/** Checks a manifest read from anywhere (a folder, the workspace store); throws TemplateError naming `source`. */
export function parseTemplateManifest(raw: unknown, source: string): TemplateManifest {
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join(".") || "(root)"} ${issue.message}`);
    throw new TemplateError(`${source}: ${problems.join("; ")}`);
  }
  return parsed.data;
}

async function loadTemplate(folder: string, folderName: string): Promise<TemplateFolder> {
  const manifestPath = join(folder, "template.json");
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(manifestPath, "utf8"));
  } catch (error) {
    throw new TemplateError(`${manifestPath}: ${(error as Error).message}`, { cause: error });
  }
  const manifest = parseTemplateManifest(raw, manifestPath);
  if (manifest.name !== folderName) {
    throw new TemplateError(`${manifestPath}: name ${manifest.name} must equal the folder name ${folderName}`);
  }
  const filesDir = join(folder, "files");
  const { bytes, latestMs } = await measure(filesDir);
  const manifestStat = await stat(manifestPath);
  return {
    manifest,
    filesDir,
    sizeBytes: bytes,
    updatedAtMs: Math.floor(Math.max(latestMs, manifestStat.mtimeMs)),
  };
}

async function measure(directory: string): Promise<{ bytes: number; latestMs: number }> {
  let bytes = 0;
  let latestMs = 0;
  for (const entry of await readdir(directory, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const info = await stat(join(entry.parentPath, entry.name));
    bytes += info.size;
    latestMs = Math.max(latestMs, info.mtimeMs);
  }
  return { bytes, latestMs };
}
