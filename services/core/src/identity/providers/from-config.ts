import type { CoreConfig } from "../../config.js";
import { createDevProvider } from "./dev.js";
import { createGitHubProvider } from "./github.js";
import { createOidcProvider } from "./oidc.js";
import type { LoginProvider } from "./provider.js";

/** The settings {@link loginProvidersFromConfig} reads. */
export type LoginProviderSettings = Pick<
  CoreConfig,
  | "devLogin"
  | "devLoginRemote"
  | "githubClientId"
  | "githubClientSecret"
  | "githubUrl"
  | "githubApiUrl"
  | "oidcIssuer"
  | "oidcClientId"
  | "oidcClientSecret"
  | "oidcDisplayName"
>;

/**
 * The login providers the configuration enables, in display order (single sign-on, GitHub,
 * dev login). Throws with a message naming the settings when one is half configured.
 */
export function loginProvidersFromConfig(config: LoginProviderSettings): LoginProvider[] {
  const providers: LoginProvider[] = [];
  if (config.oidcIssuer || config.oidcClientId) {
    if (!config.oidcIssuer || !config.oidcClientId) {
      throw new Error("OIDC login needs both --oidc-issuer and --oidc-client-id");
    }
    providers.push(
      createOidcProvider({
        issuer: config.oidcIssuer,
        clientId: config.oidcClientId,
        ...(config.oidcClientSecret ? { clientSecret: config.oidcClientSecret } : {}),
        displayName: config.oidcDisplayName,
      }),
    );
  }
  if (config.githubClientId || config.githubClientSecret) {
    if (!config.githubClientId || !config.githubClientSecret) {
      throw new Error("GitHub login needs both --github-client-id and --github-client-secret");
    }
    providers.push(
      createGitHubProvider({
        clientId: config.githubClientId,
        clientSecret: config.githubClientSecret,
        githubUrl: config.githubUrl,
        githubApiUrl: config.githubApiUrl,
      }),
    );
  }
  if (config.devLogin) providers.push(createDevProvider({ remote: config.devLoginRemote }));
  return providers;
}

/**
 * The admin identities of `--admin-users` (`github:12345,oidc:<sub>,dev:alice`), as
 * `<provider id>:<subject>` strings. Throws naming an entry without a provider id.
 */
export function parseAdminIdentities(text: string | undefined): string[] {
  const entries = (text ?? "")
    .split(",")
    .map((entry) => entry.trim())
    .filter(Boolean);
  for (const entry of entries) {
    const colon = entry.indexOf(":");
    if (colon <= 0 || colon === entry.length - 1) {
      throw new Error(`--admin-users: "${entry}" is not <provider id>:<subject> (for example github:12345)`);
    }
  }
  return entries;
}
