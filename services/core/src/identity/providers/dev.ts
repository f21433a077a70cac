import type { DevLoginProvider } from "./provider.js";

/** Options for {@link createDevProvider}. */
export interface DevProviderOptions {
  /** Default `dev`. */
  id?: string;
  /** Default `Dev login`. */
  displayName?: string;
  /** Admit sign-ins from other addresses than this machine's loopback (`--dev-login-remote`). Default false. */
  remote?: boolean;
}

/**
 * The dev login provider: the username is the subject, with no password. Enable it only on a
 * laptop: by default it admits only clients on this machine's loopback.
 */
export function createDevProvider(options: DevProviderOptions = {}): DevLoginProvider {
  return {
    id: options.id ?? "dev",
    kind: "dev",
    displayName: options.displayName ?? "Dev login",
    iconUrl: "",
    remote: options.remote ?? false,
  };
}
