import { open, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { SandboxSetupError } from "./types.js";

/**
 * Leases an unused uid in [base, base + count) for `owner`. A lease is a file created with O_EXCL
 * (`wx`), so two cores (or two creates) can never hold the same uid.
 */
export async function leaseUid(dir: string, base: number, count: number, owner: string): Promise<number> {
  const taken = new Set((await readdir(dir)).map(Number));
  // Start at a random offset so a uid freed a moment ago is rarely handed out again at once.
  const start = Math.floor(Math.random() * count);
  for (let i = 0; i < count; i++) {
    const uid = base + ((start + i) % count);
    if (taken.has(uid)) continue;
    try {
      const file = await open(join(dir, String(uid)), "wx", 0o600);
      await file.writeFile(`${owner}\n`);
      await file.close();
      return uid;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
  }
  throw new SandboxSetupError(
    `no free sandbox uid: all ${count} uids from ${base} are leased; destroy unused sandboxes or raise uidCount`,
  );
}

/** Releases `uid` if `owner` still holds it. */
export async function releaseUid(dir: string, uid: number, owner: string): Promise<void> {
  const file = join(dir, String(uid));
  try {
    if ((await readFile(file, "utf8")).trim() !== owner) return;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
    throw error;
  }
  await rm(file, { force: true });
}
