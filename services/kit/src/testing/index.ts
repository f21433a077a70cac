export * from "./codes.js";
export * from "./spawn.js";
