// The Blocks real-time contract, generated from blocks_rt's pydantic models by
// `blocks-rt spec typescript`: do not edit by hand.
//
//   import { io, Socket } from "socket.io-client";
//   import type { ServerToClientEvents, ClientToServerEvents } from "./blocks-rt";
//   const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(`${url}/mobile`, { auth });

export interface AckErrorDetail {
  code: "token_missing" | "token_too_large" | "token_malformed" | "token_algorithm" | "token_expired" | "token_not_yet_valid" | "token_issuer" | "token_audience" | "token_claims" | "token_signature" | "token_invalid" | "token_subject" | "token_header" | "token_key_unknown" | "unknown_event" | "not_connected" | "rate_limited" | "invalid_request" | "subscription_limit" | "forbidden" | "token_user_mismatch" | "unavailable";
  message: string;
  /** `invalid_request`: the path of the first bad field. */
  field?: string | null;
  /** `rate_limited`: milliseconds until a request could pass. */
  retryAfterMs?: number | null;
  /** `subscription_limit`: the most property rooms a socket may join. */
  limit?: number | null;
}

export interface Announcement {
  id: string;
  title: string;
  body: string;
}

/** `announcement:new`: a platform announcement to every connected user (room `announcements`). */
export interface AnnouncementNew {
  announcement: Announcement;
  timestamp: string;
  /** This event's place in `stream`: keep the last one per stream and send them as `auth.offsets` when reconnecting to resume. */
  eventId: string;
  /** The room (stream) this event was delivered to, e.g. `user:usr_amira`. */
  stream: string;
}

/** `auth:expired`: the access token expired; send `auth:refresh` within `graceSeconds` or be disconnected. */
export interface AuthExpired {
  graceSeconds: number;
  message: string;
}

export interface AuthRefresh {
  token: string;
}

export interface AuthRefreshAck {
  success: true;
  /** The new token's `exp` (seconds since the epoch). */
  expiresAt: number;
}

export interface Balance {
  usdc: number;
  locked: number;
  totalValue: number;
}

export interface BalanceChange {
  amount: number;
  type: "deposit" | "withdrawal" | "reward" | "investment";
  transactionId: string;
}

export interface ConfirmedInvestment {
  id: string;
  propertyId: string;
  propertyTitle: string;
  tokens: number;
  amount: number;
  status: "confirmed";
  transactionHash: string;
}

/** What socket.io-client's `connect_error` carries when the gateway refuses the handshake. */
export interface ConnectError {
  message: "Authentication failed";
  data: ConnectErrorData;
}

export interface ConnectErrorData {
  code: "token_missing" | "token_too_large" | "token_malformed" | "token_algorithm" | "token_expired" | "token_not_yet_valid" | "token_issuer" | "token_audience" | "token_claims" | "token_signature" | "token_invalid" | "token_subject" | "token_header" | "token_key_unknown" | "user_unknown" | "user_inactive" | "handshake_invalid" | "unavailable";
}

/** `connected` (4.3): sent once after the connection is accepted, after the client's `connect`. */
export interface Connected {
  message: string;
  userId: string;
  timestamp: string;
}

/** `ping` takes no fields; anything sent along is ignored. */
export interface Empty {
}

/** The ack of any refused client event: the connection stays healthy. */
export interface ErrorAck {
  success: false;
  error: AckErrorDetail;
}

export interface FundingState {
  totalTokens: number;
  soldTokens: number;
  availableTokens: number;
  fundingProgress: number;
  id: string;
  title: string;
}

export interface Investment {
  id: string;
  propertyId: string;
  propertyTitle: string;
  tokens: number;
  amount: number;
  status: "pending" | "confirmed";
}

/** `investment:confirmed` (3.2): the investment settled on chain. */
export interface InvestmentConfirmed {
  userId: string;
  investmentId: string;
  investment: ConfirmedInvestment;
  timestamp: string;
  /** This event's place in `stream`: keep the last one per stream and send them as `auth.offsets` when reconnecting to resume. */
  eventId: string;
  /** The room (stream) this event was delivered to, e.g. `user:usr_amira`. */
  stream: string;
}

/** `investment:created` (3.2): the investor's own view of a new investment. */
export interface InvestmentCreated {
  userId: string;
  investmentId: string;
  investment: Investment;
  timestamp: string;
  /** This event's place in `stream`: keep the last one per stream and send them as `auth.offsets` when reconnecting to resume. */
  eventId: string;
  /** The room (stream) this event was delivered to, e.g. `user:usr_amira`. */
  stream: string;
}

export interface Notification {
  id: string;
  type: string;
  title: string;
  body: string;
  data?: NotificationData | null;
  read: boolean;
  createdAt: string;
}

export interface NotificationData {
  propertyId?: string | null;
  investmentId?: string | null;
  transactionId?: string | null;
  url?: string | null;
}

/** `notification:new` (3.6). */
export interface NotificationNew {
  userId: string;
  notification: Notification;
  timestamp: string;
  /** This event's place in `stream`: keep the last one per stream and send them as `auth.offsets` when reconnecting to resume. */
  eventId: string;
  /** The room (stream) this event was delivered to, e.g. `user:usr_amira`. */
  stream: string;
}

export interface OrganizationUpdate {
  id: string;
  kind: string;
  title: string;
  body: string;
  propertyId?: string | null;
}

/** `organization:updated`: an org-specific update for that organization's admins. */
export interface OrganizationUpdated {
  orgId: string;
  update: OrganizationUpdate;
  timestamp: string;
  /** This event's place in `stream`: keep the last one per stream and send them as `auth.offsets` when reconnecting to resume. */
  eventId: string;
  /** The room (stream) this event was delivered to, e.g. `user:usr_amira`. */
  stream: string;
}

export interface PingAck {
  pong: boolean;
  timestamp: string;
}

export interface Portfolio {
  totalInvested: number;
  totalValue: number;
  totalROI: number;
  totalEarnings: number;
  monthlyIncome: number;
  change: PortfolioChange;
}

export interface PortfolioChange {
  field: "totalInvested" | "totalEarnings" | "totalROI";
  amount: number;
  percentage: number;
}

/** `portfolio:updated` (3.7). */
export interface PortfolioUpdated {
  userId: string;
  portfolio: Portfolio;
  timestamp: string;
  /** This event's place in `stream`: keep the last one per stream and send them as `auth.offsets` when reconnecting to resume. */
  eventId: string;
  /** The room (stream) this event was delivered to, e.g. `user:usr_amira`. */
  stream: string;
}

/** `property:funding_updated` (3.4): the funding bar of a property, to everyone watching it. */
export interface PropertyFundingUpdated {
  propertyId: string;
  property: FundingState;
  timestamp: string;
  /** This event's place in `stream`: keep the last one per stream and send them as `auth.offsets` when reconnecting to resume. */
  eventId: string;
  /** The room (stream) this event was delivered to, e.g. `user:usr_amira`. */
  stream: string;
}

/** `property:status_changed` (3.4). */
export interface PropertyStatusChanged {
  propertyId: string;
  property: PropertyStatusInfo;
  timestamp: string;
  /** This event's place in `stream`: keep the last one per stream and send them as `auth.offsets` when reconnecting to resume. */
  eventId: string;
  /** The room (stream) this event was delivered to, e.g. `user:usr_amira`. */
  stream: string;
}

export interface PropertyStatusInfo {
  id: string;
  title: string;
  status: "funding" | "construction" | "completed" | "generating-income";
  previousStatus: "funding" | "construction" | "completed" | "generating-income";
}

export interface Reward {
  id: string;
  amount: number;
  type: "roi" | "referral" | "bonus";
  investmentId: string;
  propertyId: string;
  propertyTitle: string;
  description: string;
}

/** `reward:distributed` (3.5). */
export interface RewardDistributed {
  userId: string;
  rewardId: string;
  reward: Reward;
  timestamp: string;
  /** This event's place in `stream`: keep the last one per stream and send them as `auth.offsets` when reconnecting to resume. */
  eventId: string;
  /** The room (stream) this event was delivered to, e.g. `user:usr_amira`. */
  stream: string;
}

/** `session:ended`: the server is about to disconnect this socket, and why. */
export interface SessionEnded {
  reason: "too_many_sockets" | "token_expired" | "rate_limit_abuse" | "server_shutdown" | "unavailable" | "slow_consumer";
  message: string;
}

/** `stream:resumed`: after `connected` and any replay; `offsets` holds the start of every fresh stream. */
export interface StreamResumed {
  recovered: string[];
  resyncRequired: string[];
  refused: string[];
  offsets: Record<string, string>;
}

/** `stream:resync_required`: that stream cannot be replayed from the client's offset; refetch over REST. */
export interface StreamResyncRequired {
  stream: string;
  reason: "epoch_changed" | "retention_exceeded" | "invalid_offset";
}

export interface SubscribeAck {
  success: true;
  room: string;
  /** subscribe:property: the funding bar right now. */
  funding?: FundingState | null;
  /** subscribe: the stream's offset to resume it from later. */
  offset?: string | null;
}

export interface SubscribeOrganization {
  orgId: string;
}

export interface SubscribeProperty {
  propertyId: string;
}

export interface Transaction {
  id: string;
  type: "deposit" | "withdraw" | "investment" | "rental_income";
  amount: number;
  status: "completed" | "failed";
  previousStatus: "pending";
  description: string;
}

/** `transaction:status_changed` (3.3): pending → completed or failed. */
export interface TransactionStatusChanged {
  userId: string;
  transactionId: string;
  transaction: Transaction;
  timestamp: string;
  /** This event's place in `stream`: keep the last one per stream and send them as `auth.offsets` when reconnecting to resume. */
  eventId: string;
  /** The room (stream) this event was delivered to, e.g. `user:usr_amira`. */
  stream: string;
}

/** `wallet:balance_updated` (3.1): a user's balance after a deposit, withdrawal, reward or investment. */
export interface WalletBalanceUpdated {
  userId: string;
  walletId: string;
  balance: Balance;
  change: BalanceChange;
  timestamp: string;
  /** This event's place in `stream`: keep the last one per stream and send them as `auth.offsets` when reconnecting to resume. */
  eventId: string;
  /** The room (stream) this event was delivered to, e.g. `user:usr_amira`. */
  stream: string;
}

/** Everything the gateway emits on `/mobile`, by event name. */
export interface ServerToClientEvents {
  "connected": (payload: Connected) => void;
  "stream:resumed": (payload: StreamResumed) => void;
  "stream:resync_required": (payload: StreamResyncRequired) => void;
  "auth:expired": (payload: AuthExpired) => void;
  "session:ended": (payload: SessionEnded) => void;
  "wallet:balance_updated": (payload: WalletBalanceUpdated) => void;
  "investment:created": (payload: InvestmentCreated) => void;
  "investment:confirmed": (payload: InvestmentConfirmed) => void;
  "transaction:status_changed": (payload: TransactionStatusChanged) => void;
  "reward:distributed": (payload: RewardDistributed) => void;
  "notification:new": (payload: NotificationNew) => void;
  "portfolio:updated": (payload: PortfolioUpdated) => void;
  "property:funding_updated": (payload: PropertyFundingUpdated) => void;
  "property:status_changed": (payload: PropertyStatusChanged) => void;
  "announcement:new": (payload: AnnouncementNew) => void;
  "organization:updated": (payload: OrganizationUpdated) => void;
}

/** Everything a client may emit, each answered by an ack (`success: false` carries `error.code`). */
export interface ClientToServerEvents {
  "subscribe:property": (payload: SubscribeProperty, ack: (response: SubscribeAck | ErrorAck) => void) => void;
  "unsubscribe:property": (payload: SubscribeProperty, ack: (response: SubscribeAck | ErrorAck) => void) => void;
  "subscribe:organization": (payload: SubscribeOrganization, ack: (response: SubscribeAck | ErrorAck) => void) => void;
  "unsubscribe:organization": (payload: SubscribeOrganization, ack: (response: SubscribeAck | ErrorAck) => void) => void;
  "ping": (payload: Empty, ack: (response: PingAck | ErrorAck) => void) => void;
  "auth:refresh": (payload: AuthRefresh, ack: (response: AuthRefreshAck | ErrorAck) => void) => void;
}
