export * from "./codes.js";
export * from "./ports.js";
export * from "./spawn.js";
