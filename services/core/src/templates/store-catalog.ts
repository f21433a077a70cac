import { packDirectory } from "@devex/kit";
import type { Logger } from "pino";
import { z } from "zod/mini";
import { listAll, WorkspaceObjectNotFoundError, type WorkspaceStore } from "../workspaces/store.js";
import type { TemplateArchive, TemplateCatalog, TemplateRecord } from "./catalog.js";
import { loadTemplateFolders, parseTemplateManifest, TemplateError, type TemplateFolder } from "./folders.js";

/**
 * Templates in the workspace store: `templates/<name>/template.json` (the manifest plus where
 * the files' archive is) and `templates/<name>/archives/<sha256>.tar.zst` (the files as a
 * reproducible zstd tar archive, so the same files give the same key). The manifest is
 * written after its archive, so a reader never sees a manifest without its files.
 */
export const templatesPrefix = "templates/";
const manifestKey = (name: string) => `${templatesPrefix}${name}/template.json`;
const archivesPrefix = (name: string) => `${templatesPrefix}${name}/archives/`;
const manifestKeyPattern = /^templates\/([a-z0-9-]+)\/template\.json$/;

const storedSchema = z.object({
  sizeBytes: z.number().check(z.int(), z.gte(0)),
  updatedAtMs: z.number().check(z.int(), z.gte(0)),
  archive: z.object({
    key: z.string().check(z.minLength(1)),
    sha256: z.string().check(z.regex(/^[0-9a-f]{64}$/)),
    bytes: z.number().check(z.int(), z.gte(0)),
    fileCount: z.number().check(z.int(), z.gte(0)),
    directoryCount: z.number().check(z.int(), z.gte(0)),
    symlinkCount: z.number().check(z.int(), z.gte(0)),
    contentBytes: z.number().check(z.int(), z.gte(0)),
  }),
});

/** What {@link syncTemplates} did. */
export interface SyncReport {
  /** Templates whose archive or manifest changed. */
  updated: string[];
  /** Templates already up to date. */
  unchanged: string[];
  /** Templates removed from the store because the folder no longer has them. */
  removed: string[];
}

/**
 * Makes the templates in the workspace store match a `templates/` folder: each template's
 * files are packed (reproducibly), uploaded once under their checksum, then its manifest is
 * written; older archives of a template and templates the folder no longer has are removed.
 * Running it again without changes uploads nothing.
 */
export async function syncTemplates(directory: string, store: WorkspaceStore, logger?: Logger): Promise<SyncReport> {
  const folders = await loadTemplateFolders(directory);
  const report: SyncReport = { updated: [], unchanged: [], removed: [] };
  for (const folder of folders) {
    const { name } = folder.manifest;
    const archive = await uploadArchive(folder, store);
    const record: TemplateRecord = {
      ...folder.manifest,
      sizeBytes: folder.sizeBytes,
      updatedAtMs: folder.updatedAtMs,
      archive,
    };
    const current = await readManifest(store, name).catch(() => undefined);
    if (current && JSON.stringify(current) === JSON.stringify(record)) {
      report.unchanged.push(name);
    } else {
      await store.put(manifestKey(name), Buffer.from(`${JSON.stringify(record, null, 2)}\n`));
      report.updated.push(name);
    }
    for (const key of await listKeys(store, archivesPrefix(name))) {
      if (key !== archive.key) await store.delete(key);
    }
  }
  const wanted = new Set(folders.map((folder) => folder.manifest.name));
  for (const name of await storedTemplateNames(store)) {
    if (wanted.has(name)) continue;
    await store.delete(manifestKey(name));
    await store.deletePrefix(archivesPrefix(name));
    report.removed.push(name);
  }
  logger?.info(report, "templates synced to the workspace store");
  return report;
}

/** Packs a template's files and uploads the archive unless the store already has it. */
async function uploadArchive(folder: TemplateFolder, store: WorkspaceStore): Promise<TemplateArchive> {
  const pack = () => packDirectory(folder.filesDir, { compression: "zstd", reproducible: true });
  // Hashing first: an archive already stored under its checksum is not uploaded again.
  const probe = pack();
  for await (const _chunk of probe.chunks);
  const totals = await probe.totals;
  if (totals.skippedCount > 0) {
    const named = totals.skipped.map(({ path, reason }) => `${JSON.stringify(path)} (${reason})`).join(", ");
    throw new TemplateError(
      `template ${folder.manifest.name}: ${totals.skippedCount} of its entries cannot be archived, such as ${named}; remove them`,
    );
  }
  const key = `${archivesPrefix(folder.manifest.name)}${totals.sha256}.tar.zst`;
  const existing = await store.stat(key);
  if (existing?.bytes !== totals.archiveBytes) {
    const upload = pack();
    const stored = await store.put(key, upload.chunks);
    await upload.totals;
    if (stored.sha256 !== totals.sha256) {
      await store.delete(key);
      throw new TemplateError(
        `template ${folder.manifest.name}: its files changed while they were uploaded; sync again`,
      );
    }
  }
  return {
    key,
    sha256: totals.sha256,
    bytes: totals.archiveBytes,
    fileCount: totals.fileCount,
    directoryCount: totals.directoryCount,
    symlinkCount: totals.symlinkCount,
    contentBytes: totals.contentBytes,
  };
}

async function listKeys(store: WorkspaceStore, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const object of listAll(store, prefix)) keys.push(object.key);
  return keys;
}

async function storedTemplateNames(store: WorkspaceStore): Promise<string[]> {
  return (await listKeys(store, templatesPrefix)).flatMap((key) => {
    const match = manifestKeyPattern.exec(key);
    return match?.[1] ? [match[1]] : [];
  });
}

async function readManifest(store: WorkspaceStore, name: string): Promise<TemplateRecord> {
  const key = manifestKey(name);
  const chunks: Uint8Array[] = [];
  for await (const chunk of await store.get(key)) chunks.push(chunk);
  const raw: unknown = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  const source = `workspace store ${key}`;
  const manifest = parseTemplateManifest(raw, source);
  if (manifest.name !== name) throw new TemplateError(`${source}: names template ${manifest.name}`);
  const stored = storedSchema.safeParse(raw);
  if (!stored.success) {
    const problems = stored.error.issues.map((issue) => `${issue.path.join(".")} ${issue.message}`);
    throw new TemplateError(`${source}: ${problems.join("; ")}`);
  }
  return { ...manifest, ...stored.data };
}

/** Options for {@link createStoreCatalog}. */
export interface StoreCatalogOptions {
  /** How long the list read from the store is used before it is read again, in ms. Default 30000. */
  refreshMs?: number;
  logger?: Logger;
  /** Reads the time; tests move it. Default `Date.now`. */
  now?: () => number;
}

/**
 * The template catalog read from the workspace store (what {@link syncTemplates} wrote). The
 * list is cached for `refreshMs`; asking for a name the cache lacks reads the store again (at
 * most once a second), so a template synced by another process is found at once. A manifest
 * that does not parse is left out and logged.
 */
export function createStoreCatalog(store: WorkspaceStore, options: StoreCatalogOptions = {}): TemplateCatalog {
  const refreshMs = options.refreshMs ?? 30_000;
  const now = options.now ?? Date.now;
  let cached: { templates: Map<string, TemplateRecord>; atMs: number } | undefined;
  let loading: Promise<Map<string, TemplateRecord>> | undefined;

  const load = (): Promise<Map<string, TemplateRecord>> => {
    loading ??= (async () => {
      try {
        const templates = new Map<string, TemplateRecord>();
        for (const name of await storedTemplateNames(store)) {
          try {
            templates.set(name, await readManifest(store, name));
          } catch (error) {
            if (error instanceof WorkspaceObjectNotFoundError) continue;
            if (!(error instanceof TemplateError || error instanceof SyntaxError)) throw error;
            options.logger?.warn({ err: error, template: name }, "a template in the workspace store is unusable");
          }
        }
        cached = { templates, atMs: now() };
        return templates;
      } finally {
        loading = undefined;
      }
    })();
    return loading;
  };
  const current = async (maxAgeMs: number) =>
    cached && now() - cached.atMs < maxAgeMs ? cached.templates : await load();

  return {
    async list() {
      return [...(await current(refreshMs)).values()].sort((a, b) => (a.name < b.name ? -1 : 1));
    },
    async get(name) {
      const found = (await current(refreshMs)).get(name);
      if (found) return found;
      return (await current(1_000)).get(name);
    },
  };
}
