import { createContext, type ReactNode, useContext, useEffect } from "react";
import type { BlocksRealtime } from "../client.js";

const RealtimeContext = createContext<BlocksRealtime | null>(null);

export interface RealtimeProviderProps {
  /** One client for the app, made outside render (module scope, or `useState(() => new BlocksRealtime(...))`). */
  client: BlocksRealtime;
  /** Connect while mounted (and disconnect on unmount); false when the app drives `connect()` itself. */
  autoConnect?: boolean;
  children?: ReactNode;
}

export function RealtimeProvider({ client, autoConnect = true, children }: RealtimeProviderProps): ReactNode {
  useEffect(() => {
    if (!autoConnect) return undefined;
    client.connect().catch(() => undefined); // refusals show in the state (`unauthorized`, `closed`)
    return () => client.disconnect();
  }, [client, autoConnect]);
  return <RealtimeContext.Provider value={client}>{children}</RealtimeContext.Provider>;
}

/** The client of the nearest `RealtimeProvider`. */
export function useRealtime(): BlocksRealtime {
  const client = useContext(RealtimeContext);
  if (client === null) throw new Error("useRealtime() needs a <RealtimeProvider client={...}> above it");
  return client;
}
