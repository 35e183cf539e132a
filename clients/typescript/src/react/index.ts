export { RealtimeProvider, useRealtime, type RealtimeProviderProps } from "./context.js";
export { useConnectionState, useProperty, useRealtimeEvent, useWalletBalance, type PropertyState } from "./hooks.js";
export { bindQueryClient, queryKeys, type QueryClientLike } from "./query.js";
