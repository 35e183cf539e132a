import type { AckErrorDetail, ConnectErrorData } from "./generated/blocks-rt.js";

/** Why a request or a connection failed: the gateway's own codes, and the client's. */
export type RealtimeErrorCode =
  | ConnectErrorData["code"]
  | AckErrorDetail["code"]
  | "timeout" // no ack (or no welcome) in time
  | "not_connected" // a request while the socket is down: never buffered
  | "closed" // `disconnect()` was called while waiting
  | "too_many_sockets" // the gateway ended this session for a newer one of the same user
  | "unsubscribed" // the last subscriber left before the subscription was made
  | "token_unavailable"; // `getToken()` failed

/** An error with a stable `code` (the gateway's `error.code` / `connect_error` `data.code`, or the client's). */
export class RealtimeError extends Error {
  readonly code: RealtimeErrorCode;
  readonly data: Record<string, unknown>;

  constructor(code: RealtimeErrorCode, message: string, data: Record<string, unknown> = {}) {
    super(`${code}: ${message}`);
    this.name = "RealtimeError";
    this.code = code;
    this.data = data;
  }
}

/** Connect refusals that a fresh token cannot fix. */
export const FATAL_REFUSALS: ReadonlySet<string> = new Set(["user_unknown", "user_inactive", "handshake_invalid"]);
