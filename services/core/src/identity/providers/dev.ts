import type { DevLoginProvider } from "./provider.js";

/** Options for {@link createDevProvider}. */
export interface DevProviderOptions {
  /** Default `dev`. */
  id?: string;
  /** Default `Dev login`. */
  displayName?: string;
}

/** The dev login provider: the username is the subject. Enable it only on a laptop. */
export function createDevProvider(options: DevProviderOptions = {}): DevLoginProvider {
  return { id: options.id ?? "dev", kind: "dev", displayName: options.displayName ?? "Dev login", iconUrl: "" };
}
