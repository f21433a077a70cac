import { execFileSync } from "node:child_process";
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { unpackArchive } from "@devex/kit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { TemplateError } from "../src/templates/folders.js";
import { createStoreCatalog, syncTemplates } from "../src/templates/store-catalog.js";
import { createFilesystemWorkspaceStore, type WorkspaceStore } from "../src/workspaces/index.js";

/** Templates synced from a folder into a (filesystem) workspace store, and the catalog reading them back. */
let dir: string;
let templates: string;
let store: WorkspaceStore;

const repoTemplates = join(import.meta.dirname, "..", "..", "..", "templates");

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "devex-templates-"));
  templates = join(dir, "templates");
  await cp(repoTemplates, templates, { recursive: true });
  store = await createFilesystemWorkspaceStore({ root: join(dir, "objects") });
});
afterEach(async () => {
  await store.close();
  await rm(dir, { recursive: true, force: true });
});

async function keys(prefix: string): Promise<string[]> {
  return (await store.list(prefix)).keys.map((object) => object.key);
}

describe("syncTemplates and the store catalog", () => {
  it("uploads each template once under its checksum, then its manifest; a second sync changes nothing", async () => {
    const first = await syncTemplates(templates, store);
    expect(first).toEqual({ updated: ["blank", "node", "python"], unchanged: [], removed: [] });
    const catalog = createStoreCatalog(store);
    const node = await catalog.get("node");
    expect(node).toMatchObject({ name: "node", displayName: "Node.js", startCommand: "node index.js" });
    expect(node?.archive.key).toBe(`templates/node/archives/${node?.archive.sha256}.tar.zst`);
    expect(await keys("templates/node/")).toEqual([node?.archive.key, "templates/node/template.json"]);
    const before = await store.stat(node?.archive.key ?? "");

    const second = await syncTemplates(templates, store);
    expect(second).toEqual({ updated: [], unchanged: ["blank", "node", "python"], removed: [] });
    expect(await store.stat(node?.archive.key ?? "")).toEqual(before);
  });

  it("stores the exact files: unpacking the archive gives the template's folder back", async () => {
    await syncTemplates(templates, store);
    const python = await createStoreCatalog(store).get("python");
    const into = join(dir, "unpacked");
    await mkdir(into);
    const totals = await unpackArchive(await store.get(python?.archive.key ?? ""), into, {
      compression: "zstd",
      expectedSha256: python?.archive.sha256 ?? "",
    });
    expect(totals.fileCount).toBe(python?.archive.fileCount);
    for (const name of ["main.py", ".gitignore"]) {
      expect(await readFile(join(into, name), "utf8")).toBe(
        await readFile(join(templates, "python", "files", name), "utf8"),
      );
    }
  });

  it("matches names exactly: a prefix finds nothing, and nodejs is its own template", async () => {
    await cp(join(templates, "node"), join(templates, "nodejs"), { recursive: true });
    const manifest = JSON.parse(await readFile(join(templates, "nodejs", "template.json"), "utf8"));
    await writeFile(join(templates, "nodejs", "template.json"), JSON.stringify({ ...manifest, name: "nodejs" }));
    await writeFile(join(templates, "nodejs", "files", "extra.js"), "// only in nodejs\n");
    await syncTemplates(templates, store);
    const catalog = createStoreCatalog(store);
    expect(await catalog.get("nod")).toBeUndefined();
    const [node, nodejs] = [await catalog.get("node"), await catalog.get("nodejs")];
    expect(node?.archive.fileCount).toBe(2);
    expect(nodejs?.archive.fileCount).toBe(3);
    expect((await catalog.list()).map((template) => template.name)).toEqual(["blank", "node", "nodejs", "python"]);
  });

  it("replaces a changed template's archive and removes templates the folder no longer has", async () => {
    await syncTemplates(templates, store);
    const catalog = createStoreCatalog(store, { refreshMs: 0 });
    const old = await catalog.get("blank");
    await writeFile(join(templates, "blank", "files", "README.md"), "changed\n");
    await rm(join(templates, "python"), { recursive: true });

    expect(await syncTemplates(templates, store)).toEqual({
      updated: ["blank"],
      unchanged: ["node"],
      removed: ["python"],
    });
    const updated = await catalog.get("blank");
    expect(updated?.archive.sha256).not.toBe(old?.archive.sha256);
    expect(await keys("templates/blank/archives/")).toEqual([updated?.archive.key]);
    expect(await catalog.get("python")).toBeUndefined();
    expect(await keys("templates/python/")).toEqual([]);
  });

  it("finds a template another process synced after the catalog was read", async () => {
    const catalog = createStoreCatalog(store);
    expect(await catalog.list()).toEqual([]);
    await syncTemplates(templates, store);
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    expect((await catalog.get("node"))?.name).toBe("node");
  });

  it("refuses a broken manifest, naming the template and the field", async () => {
    await writeFile(join(templates, "node", "template.json"), JSON.stringify({ name: "node", displayName: "" }));
    const error = await syncTemplates(templates, store).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TemplateError);
    expect(String(error)).toContain("node/template.json");
    expect(String(error)).toContain("displayName");
  });

  it("refuses a template whose files hold what an archive cannot, naming it, and stores nothing of it", async () => {
    execFileSync("mkfifo", [join(templates, "node", "files", "pipe")]);
    const error = await syncTemplates(templates, store).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TemplateError);
    expect(String(error)).toContain('template node: 1 of its entries cannot be archived, such as "pipe" (fifo)');
    expect(await keys("templates/node/")).toEqual([]);
  });
});
