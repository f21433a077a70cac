/** The state store: its interface, its two drivers, and the monitor core's health follows. */

export { createEmbeddedStore, type EmbeddedStoreOptions } from "./embedded.js";
export { createStateMonitor, type StateMonitor, type StateMonitorOptions } from "./monitor.js";
export { createRedisStore, type RedisStoreOptions } from "./redis.js";
export * from "./store.js";
