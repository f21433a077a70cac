/**
 * Preview host names: one host per repl and port, `<port>-repl-<26 chars>.<domain>` (the repl
 * id with `_` as `-`, since DNS labels cannot hold `_`), so every app gets its own browser
 * origin and its cookies never meet another repl's or the API's.
 */

/** The query parameter carrying a preview URL's token. */
export const previewTokenParam = "devex_preview_token";

/** Where previews are served, as people reach them. */
export interface PreviewAddress {
  /** `http` or `https`. */
  scheme: "http" | "https";
  /** The domain under which each preview has its host (`localhost`, `preview.example.com`). */
  domain: string;
  /** The port in URLs; undefined for the scheme's default. */
  port?: number;
}

/** A preview host, parsed. */
export interface PreviewHost {
  replId: string;
  port: number;
}

/**
 * The public address of previews: from `--preview-public-url` when given (its scheme, host
 * name as the domain, and port), else `http://<domain>:<listening port>`.
 */
export function previewAddress(options: { publicUrl?: string; domain: string; port: number }): PreviewAddress {
  if (options.publicUrl) {
    const url = new URL(options.publicUrl);
    const scheme = url.protocol === "https:" ? "https" : "http";
    return { scheme, domain: url.hostname.toLowerCase(), ...(url.port ? { port: Number(url.port) } : {}) };
  }
  return { scheme: "http", domain: options.domain.toLowerCase(), port: options.port };
}

/** The host name of a repl's port (without the URL's port). */
export function previewHostName(address: PreviewAddress, replId: string, port: number): string {
  return `${port}-${replId.replace("_", "-")}.${address.domain}`;
}

/** The URL of a repl's port: `<scheme>://<host>[:<port>]/`. */
export function previewBaseUrl(address: PreviewAddress, replId: string, port: number): string {
  const authority = address.port === undefined ? "" : `:${address.port}`;
  return `${address.scheme}://${previewHostName(address, replId, port)}${authority}/`;
}

const hostPattern = /^([0-9]{1,5})-repl-([0-9a-z]{26})\.(.+)$/;

/** The repl and port a `Host` header names under `address.domain`, or undefined. */
export function parsePreviewHost(address: PreviewAddress, host: string | undefined): PreviewHost | undefined {
  if (!host) return undefined;
  const name = host
    .toLowerCase()
    .replace(/:[0-9]+$/, "")
    .replace(/\.$/, "");
  const match = hostPattern.exec(name);
  if (!match || match[3] !== address.domain) return undefined;
  const port = Number(match[1]);
  if (port < 1 || port > 65_535 || String(port) !== match[1]) return undefined;
  return { replId: `repl_${match[2]}`, port };
}
