import { createPublicKey } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { runnerTokenAlgorithm } from "@devex/kit";
import { type CryptoKey, exportPKCS8, generateKeyPair, importPKCS8, importSPKI } from "jose";

/** Core's runner-token signing key pair. */
export interface TokenKeys {
  privateKey: CryptoKey;
  /** SPKI PEM, handed to every runner. */
  publicKeyPem: string;
  publicKey: CryptoKey;
}

/**
 * Loads core's Ed25519 signing key from `<dataDir>/keys/runner-token.pem`, or makes one
 * (mode 0600) on first start, so runner tokens survive a core restart.
 */
export async function loadTokenKeys(dataDir: string): Promise<TokenKeys> {
  const directory = join(dataDir, "keys");
  const path = join(directory, "runner-token.pem");
  let pkcs8: string;
  try {
    pkcs8 = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    const pair = await generateKeyPair(runnerTokenAlgorithm, { crv: "Ed25519", extractable: true });
    pkcs8 = await exportPKCS8(pair.privateKey);
    await mkdir(directory, { recursive: true, mode: 0o700 });
    await writeFile(path, pkcs8, { mode: 0o600, flag: "wx" });
  }
  const privateKey = await importPKCS8(pkcs8, runnerTokenAlgorithm, { extractable: true });
  const publicKeyPem = createPublicKey(pkcs8).export({ type: "spki", format: "pem" }).toString();
  const publicKey = await importSPKI(publicKeyPem, runnerTokenAlgorithm);
  return { privateKey, publicKeyPem, publicKey };
}
