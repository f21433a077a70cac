export * from "./config.js";
export * from "./health.js";
export * from "./logging.js";
export * from "./main.js";
export * from "./metrics.js";
export * from "./reflection.js";
export * from "./server.js";
export * from "./settings.js";
