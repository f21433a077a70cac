export { type Core, startCore } from "./app.js";
export { type CoreConfig, coreSettings } from "./config.js";
