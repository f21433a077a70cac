import { cp, readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod/mini";
import type { TemplateCatalog, TemplateRecord } from "./catalog.js";

const namePattern = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

const manifestSchema = z.object({
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
});

/** A template folder that could not be loaded. */
export class TemplateError extends Error {
  override name = "TemplateError";
}

/**
 * The templates of a `templates/` folder: each subfolder holds a `template.json` manifest
 * (whose name must equal the folder's) and a `files/` folder a new repl starts with.
 * Manifests are validated when the catalog is created, so a broken template stops
 * start-up with a message naming it, not a user's create later.
 */
export async function createDirectoryCatalog(directory: string): Promise<TemplateCatalog> {
  const templates = new Map<string, TemplateRecord>();
  for (const entry of await readdir(directory, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    const template = await loadTemplate(join(directory, entry.name), entry.name);
    templates.set(template.name, template);
  }
  const sorted = [...templates.values()].sort((a, b) => a.name.localeCompare(b.name));
  return {
    async list() {
      return sorted;
    },
    async get(name) {
      return templates.get(name);
    },
    async seed(name, workspaceDir) {
      const template = templates.get(name);
      if (!template) throw new TemplateError(`no template named ${name}`);
      // Symlinks are copied as links (never followed); modes are kept.
      await cp(template.filesDir, workspaceDir, {
        recursive: true,
        verbatimSymlinks: true,
        preserveTimestamps: true,
        errorOnExist: true,
        force: false,
      });
    },
  };
}

async function loadTemplate(folder: string, folderName: string): Promise<TemplateRecord> {
  const manifestPath = join(folder, "template.json");
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(manifestPath, "utf8"));
  } catch (error) {
    throw new TemplateError(`${manifestPath}: ${(error as Error).message}`, { cause: error });
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join(".") || "(root)"} ${issue.message}`);
    throw new TemplateError(`${manifestPath}: ${problems.join("; ")}`);
  }
  const manifest = parsed.data;
  if (manifest.name !== folderName) {
    throw new TemplateError(`${manifestPath}: name ${manifest.name} must equal the folder name ${folderName}`);
  }
  const filesDir = join(folder, "files");
  const { bytes, latestMs } = await measure(filesDir);
  const manifestStat = await stat(manifestPath);
  return {
    ...manifest,
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
