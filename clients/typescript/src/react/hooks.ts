import { useCallback, useEffect, useInsertionEffect, useRef, useState, useSyncExternalStore } from "react";
import type { RealtimeError } from "../errors.js";
import type { ConnectionState, Handler, RealtimeEventName } from "../events.js";
import type { Balance, FundingState, SubscribeAck } from "../generated/blocks-rt.js";
import { useRealtime } from "./context.js";

/** The connection state, re-rendering on every change (for a status indicator). */
export function useConnectionState(): ConnectionState {
  const rt = useRealtime();
  const subscribe = useCallback((onChange: () => void) => rt.onStateChange(onChange), [rt]);
  const read = useCallback(() => rt.state, [rt]);
  return useSyncExternalStore(subscribe, read, read);
}

/** Call `handler` for each `event`: one listener per mounted component, always the latest `handler`. */
export function useRealtimeEvent<E extends RealtimeEventName>(event: E, handler: Handler<E>): void {
  const rt = useRealtime();
  const latest = useRef(handler);
  useInsertionEffect(() => {
    latest.current = handler;
  });
  useEffect(() => rt.on(event, (payload) => latest.current(payload)), [rt, event]);
}

export interface PropertyState {
  /** The funding bar: the subscribe ack's snapshot, then every live `property:funding_updated`. */
  funding: FundingState | null;
  status: "subscribing" | "live" | "error";
  error: RealtimeError | null;
}

/** Watch a property while mounted: subscribed (counted, made again after reconnects), its funding kept live. */
export function useProperty(propertyId: string): PropertyState {
  const rt = useRealtime();
  const [state, setState] = useState<PropertyState>({ funding: null, status: "subscribing", error: null });
  useEffect(() => {
    let mounted = true;
    setState({ funding: null, status: "subscribing", error: null });
    const offSnapshot = rt.on("property:snapshot", (snapshot) => {
      if (snapshot.propertyId === propertyId) setState({ funding: snapshot.funding, status: "live", error: null });
    });
    const offLive = rt.on("property:funding_updated", (event) => {
      if (event.propertyId === propertyId) setState((s) => ({ ...s, funding: event.property }));
    });
    rt.subscribeToProperty(propertyId).then(
      (ack: SubscribeAck) => mounted && setState((s) => ({ ...s, funding: s.funding ?? ack.funding ?? null,
                                                            status: "live", error: null })),
      (error: RealtimeError) => mounted && error.code !== "unsubscribed" &&
        setState((s) => ({ ...s, status: "error", error })),
    );
    return () => {
      mounted = false;
      offSnapshot();
      offLive();
      rt.unsubscribeFromProperty(propertyId).catch(() => undefined); // the connection may be gone already
    };
  }, [rt, propertyId]);
  return state;
}

/** The wallet balance of the latest `wallet:balance_updated` (null until one arrives: fetch it over REST). */
export function useWalletBalance(): Balance | null {
  const [balance, setBalance] = useState<Balance | null>(null);
  useRealtimeEvent("wallet:balance_updated", (event) => setBalance(event.balance));
  return balance;
}
