export { BlocksRealtime, type RealtimeOptions } from "./client.js";
export { RealtimeError, type RealtimeErrorCode } from "./errors.js";
export { memoryStorage, webStorage, type RealtimeStorage } from "./storage.js";
export type { LifecycleAdapter, NetworkAdapter } from "./adapters.js";
export type { GetToken } from "./tokens.js";
export type * from "./events.js";
