// Event names and payload types: the gateway's own contract (src/generated, from `blocks-rt spec typescript`),
// plus the two events this client raises itself.
import type { FundingState, ServerToClientEvents, StreamResyncRequired } from "./generated/blocks-rt.js";

export type * from "./generated/blocks-rt.js";

type PayloadOf<F> = F extends (payload: infer P) => void ? P : never;

/** Every event the gateway emits, by name, with its payload. */
export type ServerEvents = { [E in keyof ServerToClientEvents]: PayloadOf<ServerToClientEvents[E]> };

/** `resync`: a stream could not be resumed (its log was lost or trimmed): refetch its state over REST. */
export interface ResyncEvent {
  stream: string;
  reason: StreamResyncRequired["reason"];
}

/** `property:snapshot`: the funding bar a `subscribe:property` ack carried, applied before later live events. */
export interface PropertySnapshotEvent {
  propertyId: string;
  stream: string;
  funding: FundingState | null;
}

/** Everything `rt.on` accepts: the gateway's events and the client's own. */
export interface RealtimeEvents extends ServerEvents {
  resync: ResyncEvent;
  "property:snapshot": PropertySnapshotEvent;
}

export type RealtimeEventName = keyof RealtimeEvents;
export type Handler<E extends RealtimeEventName> = (payload: RealtimeEvents[E]) => void | Promise<void>;

export type ConnectionState = "idle" | "connecting" | "live" | "reconnecting" | "offline" | "unauthorized" | "closed";
