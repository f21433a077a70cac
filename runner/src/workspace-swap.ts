import { randomBytes } from "node:crypto";
import { chmod, lstat, mkdtemp, readdir, realpath, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import type { Logger } from "pino";
import { errnoOf } from "./filesystem/errors.js";

/**
 * The start of the names of what an import puts beside the workspace: a staging directory
 * it unpacks into, and the old tree while it is being removed ("trash"). Siblings, so that
 * they are on the workspace's filesystem and a rename moves them into place.
 */
function siblingPrefix(workspace: string, kind: "staging" | "trash"): string {
  return `.${basename(workspace)}.import-${kind}-`;
}

/** Makes an empty staging directory beside the workspace, with the workspace's permission bits. */
export async function createStaging(workspace: string): Promise<string> {
  const staging = await mkdtemp(join(dirname(workspace), siblingPrefix(workspace, "staging")));
  try {
    await chmod(staging, (await stat(workspace)).mode & 0o7777);
  } catch (error) {
    await rm(staging, { recursive: true, force: true });
    throw error;
  }
  return staging;
}

/**
 * Puts `staging` in the place of the workspace with two renames: the workspace to a trash
 * sibling, then the staging directory to the workspace's path (if that fails, the first
 * rename is undone). The old tree is then removed in the background. A crash between the
 * two renames is repaired at the next start by {@link recoverInterruptedImport}.
 */
export async function swapIn(workspace: string, staging: string, logger: Logger): Promise<void> {
  // The time in the name tells the newest trash, should a crash leave several.
  const stamp = Date.now().toString().padStart(15, "0");
  const trash = join(
    dirname(workspace),
    `${siblingPrefix(workspace, "trash")}${stamp}-${randomBytes(4).toString("hex")}`,
  );
  await rename(workspace, trash);
  try {
    await rename(staging, workspace);
  } catch (error) {
    await rename(trash, workspace);
    throw error;
  }
  void removeInBackground(trash, logger);
}

/**
 * Repairs what an import cut short by a crash left beside the workspace (`path` as
 * configured; it need not exist): when the workspace is missing but a trash sibling is
 * there, the crash came between the two renames of {@link swapIn}, and the newest trash,
 * the old workspace, is renamed back. All other staging and trash siblings are stale and
 * are removed in the background.
 */
export async function recoverInterruptedImport(path: string, logger: Logger): Promise<void> {
  const workspace = await realpath(path).catch(async () => {
    const parent = dirname(resolve(path));
    return join(await realpath(parent).catch(() => parent), basename(path));
  });
  const parent = dirname(workspace);
  let names: string[];
  try {
    names = await readdir(parent);
  } catch (error) {
    if (errnoOf(error) === "ENOENT") return;
    throw error;
  }
  const trash = names.filter((name) => name.startsWith(siblingPrefix(workspace, "trash"))).sort();
  const staging = names.filter((name) => name.startsWith(siblingPrefix(workspace, "staging")));
  const newestTrash = trash.at(-1);
  if (newestTrash && !(await exists(workspace))) {
    await rename(join(parent, newestTrash), workspace);
    trash.pop();
    logger.warn(
      { workspace, movedBack: newestTrash },
      "put back the workspace that an interrupted import had moved aside",
    );
  }
  for (const name of [...trash, ...staging]) void removeInBackground(join(parent, name), logger);
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (error) {
    if (errnoOf(error) === "ENOENT") return false;
    throw error;
  }
}

async function removeInBackground(path: string, logger: Logger): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true });
  } catch (error) {
    logger.warn({ err: error, path }, "cannot remove a directory left by a workspace import");
  }
}
