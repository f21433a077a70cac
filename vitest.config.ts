import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: [
      "services/*/test/**/*.test.ts",
      "runner/test/**/*.test.ts",
      "sdk/test/**/*.test.ts",
      "cli/test/**/*.test.ts",
    ],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: "forks",
    reporters: ["default"],
  },
});
