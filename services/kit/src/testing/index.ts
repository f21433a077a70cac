export * from "./codes.js";
export * from "./oversized.js";
export * from "./ports.js";
export * from "./spawn.js";
