export * from "./config.js";
export * from "./runner.js";
