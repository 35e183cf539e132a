// The counterpart of the design's SocketService, made to lose nothing: it resumes every stream from its offset
// (kept in `storage`, so across app restarts too), hands each event to its handlers once and in log order,
// refreshes the token when the gateway asks, and reconnects until the app says stop.
import { io, type Socket } from "socket.io-client";
import type { LifecycleAdapter, NetworkAdapter } from "./adapters.js";
import { Backoff } from "./backoff.js";
import { FATAL_REFUSALS, RealtimeError } from "./errors.js";
import type { ConnectionState, Handler, RealtimeEventName, RealtimeEvents } from "./events.js";
import type { AuthRefreshAck, SessionEnded, StreamResumed, SubscribeAck } from "./generated/blocks-rt.js";
import { OffsetBook } from "./offsets.js";
import { memoryStorage, type RealtimeStorage } from "./storage.js";
import { type GetToken, TokenSource } from "./tokens.js";

export interface RealtimeOptions {
  /** The gateway, e.g. `https://rt.example.com` (the `/mobile` namespace is added). */
  url: string;
  /** The current access token; called single-flight on every connect, with `forceRefresh` after a refusal. */
  getToken: GetToken;
  /** Where offsets are kept between runs (AsyncStorage, `webStorage(localStorage)`); default in memory. */
  storage?: RealtimeStorage;
  /** The storage key of the offsets (one client per key). */
  storageKey?: string;
  /** App foreground/background (React Native: `appStateLifecycle(AppState)`); default always active. */
  lifecycle?: LifecycleAdapter;
  /** Network reachability (React Native: `netInfoNetwork(NetInfo)`); default always online. */
  network?: NetworkAdapter;
  /** How long the app may stay in the background before the socket is closed. */
  backgroundGraceMs?: number;
  /** How long a request (`subscribe:property`, `auth:refresh`) waits for its ack. */
  ackTimeoutMs?: number;
  /** How long a connection attempt may take to reach the gateway's welcome. */
  connectTimeoutMs?: number;
  /** Reconnect delays: full jitter between 0 and min(maxMs, minMs * 2^attempt). */
  backoff?: { minMs?: number; maxMs?: number };
  random?: () => number;
  transports?: ("websocket" | "polling" | "webtransport")[];
  /** A handler that threw, a storage that failed: reported here, never thrown into the connection. */
  onError?: (error: unknown) => void;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((yes, no) => {
    resolve = yes;
    reject = no;
  });
  promise.catch(() => undefined); // a rejection nobody awaits is not an unhandled one
  return { promise, resolve, reject };
}

interface PropertySubscription {
  count: number;
  waiters: Deferred<SubscribeAck>[];
  inFlight: boolean;
}

type Payload = Record<string, unknown>;
type Step = () => unknown;

const NAMESPACE = "/mobile";
const MAX_OFFSETS = 200; // the gateway refuses a handshake with more (messages.HandshakeAuth)
const RATE_LIMIT_RETRIES = 3;
const propertyStream = (id: string): string => `property:${id}`;
/** Rooms a socket only has while it asks for them: their offsets are sent only for current subscriptions. */
const isOptional = (stream: string): boolean => stream.startsWith("property:") || stream.startsWith("organization:");

export class BlocksRealtime {
  private readonly socket: Socket;
  private readonly offsets: OffsetBook;
  private readonly tokens: TokenSource;
  private readonly backoff: Backoff;
  private readonly handlers = new Map<string, Set<{ handler: Handler<never> }>>();
  private readonly stateListeners = new Set<(state: ConnectionState) => void>();
  private readonly properties = new Map<string, PropertySubscription>();
  private readonly holding = new Map<string, [string, Payload][]>(); // stream → events waiting for a snapshot
  private readonly joined = new Set<string>(); // optional streams the gateway joined at connect
  private readonly queue: Step[] = [];
  private running = false;
  private draining: Promise<void> | null = null;
  private current: ConnectionState = "idle";
  private wanted = false; // connect() called and not disconnect()
  private everLive = false;
  private session = 0; // one per accepted socket connection
  private attempt = 0; // one per connection attempt: a stale attempt's continuation does nothing
  private token = "";
  private sentOffsets: Record<string, string> = {};
  private refusedOnce = false;
  private ended: SessionEnded["reason"] | null = null;
  private ready: Deferred<void> | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private welcomeTimer: ReturnType<typeof setTimeout> | null = null;
  private backgroundTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly suspended = new Set<"background" | "offline">();
  private detach: (() => void)[] = [];
  private readonly options: Required<Pick<RealtimeOptions, "backgroundGraceMs" | "ackTimeoutMs" | "connectTimeoutMs">>;
  private readonly onError: (error: unknown) => void;
  /** Why the gateway closed the session for good (`too_many_sockets`), or why it was refused. */
  closeReason: string | null = null;
  /** Events dropped because they had been handled already (their id at or below the stream's offset). */
  duplicates = 0;

  constructor(private readonly config: RealtimeOptions) {
    this.onError = config.onError ?? ((error) => console.error("[blocks-rt]", error));
    this.options = {
      backgroundGraceMs: config.backgroundGraceMs ?? 15_000,
      ackTimeoutMs: config.ackTimeoutMs ?? 5_000,
      connectTimeoutMs: config.connectTimeoutMs ?? 15_000,
    };
    this.offsets = new OffsetBook(config.storage ?? memoryStorage(), `${config.storageKey ?? "blocks-rt"}:offsets`,
      this.onError);
    this.tokens = new TokenSource(config.getToken);
    this.backoff = new Backoff(config.backoff?.minMs ?? 500, config.backoff?.maxMs ?? 30_000,
      config.random ?? Math.random);
    const base = config.url.replace(/\/+$/, "");
    this.socket = io(base.endsWith(NAMESPACE) ? base : base + NAMESPACE, {
      autoConnect: false,
      reconnection: false, // ours: full jitter, never gives up, knows why the session ended
      forceNew: true,
      transports: config.transports ?? ["websocket"],
      auth: (send) => {
        this.sentOffsets = this.offsets.forConnect((s) => !isOptional(s) || this.wantsStream(s), MAX_OFFSETS);
        send({ token: this.token, offsets: this.sentOffsets });
      },
    });
    this.socket.on("connect", this.onConnect);
    this.socket.on("connect_error", this.onConnectError);
    this.socket.on("disconnect", this.onDisconnect);
    this.socket.onAny(this.onEvent);
  }

  // --- public API ---------------------------------------------------------------------------------------
  get state(): ConnectionState {
    return this.current;
  }

  /** Resolves when live (any replay handled); rejects only for a refusal a fresh token cannot fix, or `disconnect()`. */
  connect(): Promise<void> {
    if (this.current === "live") return Promise.resolve();
    this.ready ??= deferred();
    const { promise } = this.ready;
    if (!this.wanted) {
      this.wanted = true;
      this.closeReason = null;
      this.refusedOnce = false;
      this.backoff.reset();
      this.attachAdapters();
      void this.open(false);
    }
    return promise;
  }

  /** Close for good (until the next `connect()`): what was handled is saved; nothing reconnects. */
  disconnect(): void {
    this.stop("closed", new RealtimeError("closed", "disconnect() was called"));
  }

  /** Resolves once the handler running now (if any) settled and every handled event's offset is in storage. */
  async flush(): Promise<void> {
    await this.draining;
    await this.offsets.flush();
  }

  on<E extends RealtimeEventName>(event: E, handler: Handler<E>): () => void {
    const entry = { handler: handler as Handler<never> };
    let set = this.handlers.get(event);
    if (set === undefined) this.handlers.set(event, (set = new Set()));
    set.add(entry);
    return () => {
      set.delete(entry);
      if (set.size === 0 && this.handlers.get(event) === set) this.handlers.delete(event);
    };
  }

  /** Handlers registered for `event` (or for every event): what tests and leak checks look at. */
  listenerCount(event?: RealtimeEventName): number {
    if (event !== undefined) return this.handlers.get(event)?.size ?? 0;
    let count = 0;
    for (const set of this.handlers.values()) count += set.size;
    return count;
  }

  onStateChange(listener: (state: ConnectionState) => void): () => void {
    this.stateListeners.add(listener);
    return () => void this.stateListeners.delete(listener);
  }

  /** Watch a property: the ack carries its funding bar. Counted per caller, and made again after a reconnect. */
  subscribeToProperty(propertyId: string): Promise<SubscribeAck> {
    let subscription = this.properties.get(propertyId);
    if (subscription === undefined) {
      subscription = { count: 0, waiters: [], inFlight: false };
      this.properties.set(propertyId, subscription);
    }
    subscription.count += 1;
    const waiter = deferred<SubscribeAck>();
    subscription.waiters.push(waiter);
    if (this.current === "live") this.requestSubscribe(propertyId);
    return waiter.promise;
  }

  async unsubscribeFromProperty(propertyId: string): Promise<void> {
    const subscription = this.properties.get(propertyId);
    if (subscription === undefined) return;
    subscription.count -= 1;
    if (subscription.count > 0) return;
    this.properties.delete(propertyId);
    for (const waiter of subscription.waiters.splice(0)) {
      waiter.reject(new RealtimeError("unsubscribed", `${propertyId}: unsubscribed before the ack`));
    }
    const stream = propertyStream(propertyId);
    this.offsets.drop(stream);
    this.joined.delete(stream);
    if (this.socket.connected) await this.request("unsubscribe:property", { propertyId });
  }

  // --- connection -----------------------------------------------------------------------------------------
  private async open(forceRefresh: boolean): Promise<void> {
    this.clearTimer("retryTimer");
    this.clearTimer("welcomeTimer");
    if (!this.wanted || this.suspended.size > 0) return;
    const attempt = ++this.attempt;
    this.setState(this.everLive ? "reconnecting" : "connecting");
    try {
      const [token] = await Promise.all([this.tokens.get(forceRefresh), this.offsets.load()]);
      this.token = token;
    } catch (error) {
      this.onError(error);
      if (attempt === this.attempt) this.retryLater();
      return;
    }
    if (attempt !== this.attempt || !this.wanted || this.suspended.size > 0) return;
    this.ended = null;
    this.welcomeTimer = setTimeout(() => {
      this.welcomeTimer = null;
      this.socket.disconnect(); // ours: onDisconnect ignores it
      this.retryLater();
    }, this.options.connectTimeoutMs);
    this.socket.connect();
  }

  private retryLater(delay = this.backoff.next()): void {
    this.clearTimer("welcomeTimer");
    this.clearTimer("retryTimer");
    if (!this.wanted || this.suspended.size > 0) return;
    this.setState(this.everLive ? "reconnecting" : "connecting");
    this.retryTimer = setTimeout(() => void this.open(false), delay);
  }

  private readonly onConnect = (): void => {
    this.session += 1;
  };

  private readonly onConnectError = (error: Error & { data?: { code?: string } }): void => {
    this.clearTimer("welcomeTimer");
    const code = error.data?.code;
    if (code === undefined || code === "unavailable") {
      this.retryLater(); // the network, or a gateway that cannot check the token right now
    } else if (code.startsWith("token_") && !this.refusedOnce && !FATAL_REFUSALS.has(code)) {
      this.refusedOnce = true; // one fresh token and one retry, at once
      void this.open(true);
    } else {
      this.stop("unauthorized", new RealtimeError(code as RealtimeError["code"], error.message));
      this.closeReason = code;
    }
  };

  private readonly onDisconnect = (reason: Socket.DisconnectReason): void => {
    this.clearTimer("welcomeTimer");
    if (reason === "io client disconnect") return; // ours (disconnect, suspend, timeout) decided what follows
    this.holding.forEach((_, stream) => this.release(stream));
    const ended = this.ended;
    this.ended = null;
    if (ended === "too_many_sockets") {
      this.stop("closed", new RealtimeError("too_many_sockets", "a newer connection of this user replaced this one"));
      this.closeReason = ended;
    } else if (ended === "server_shutdown" || ended === "slow_consumer") {
      this.backoff.reset();
      void this.open(false); // another node (or this one, caught up) takes us at once
    } else if (ended === "token_expired") {
      void this.open(true);
    } else {
      this.retryLater();
    }
  };

  private goLive(session: number): void {
    if (session !== this.session || !this.socket.connected || !this.wanted) return;
    this.refusedOnce = false;
    this.backoff.reset();
    this.everLive = true;
    this.setState("live");
    this.ready?.resolve();
    this.ready = null;
    for (const propertyId of this.properties.keys()) this.requestSubscribe(propertyId);
  }

  /** Close the socket and stay down in `state` (closed, unauthorized), failing whoever waits. */
  private stop(state: "closed" | "unauthorized", error: RealtimeError): void {
    this.wanted = false;
    this.attempt += 1;
    this.clearTimer("retryTimer");
    this.clearTimer("welcomeTimer");
    this.clearTimer("backgroundTimer");
    this.detach.forEach((undo) => undo());
    this.detach = [];
    this.suspended.clear();
    this.socket.disconnect();
    this.queue.length = 0; // what was accepted and not handled is replayed next time
    this.holding.clear();
    this.offsets.rewind();
    void this.offsets.flush();
    this.ready?.reject(error);
    this.ready = null;
    this.setState(state);
  }

  private suspend(why: "background" | "offline"): void {
    this.suspended.add(why);
    this.clearTimer("retryTimer");
    this.clearTimer("welcomeTimer");
    this.attempt += 1;
    this.socket.disconnect();
    void this.offsets.flush();
    this.setState("offline");
  }

  private resume(why: "background" | "offline"): void {
    if (!this.suspended.delete(why) || this.suspended.size > 0) return;
    this.backoff.reset();
    void this.open(false);
  }

  private attachAdapters(): void {
    const { lifecycle, network } = this.config;
    if (network !== undefined) {
      this.detach.push(network.subscribe((online) => (online ? this.resume("offline") : this.suspend("offline"))));
      if (!network.isOnline()) this.suspended.add("offline");
    }
    if (lifecycle !== undefined) {
      this.detach.push(lifecycle.subscribe((active) => this.onActiveChange(active)));
      if (!lifecycle.isActive()) this.suspended.add("background");
    }
    if (this.suspended.size > 0) this.setState("offline");
  }

  private onActiveChange(active: boolean): void {
    this.clearTimer("backgroundTimer");
    if (active) {
      this.resume("background");
    } else if (!this.suspended.has("background")) {
      this.backgroundTimer = setTimeout(() => {
        this.backgroundTimer = null;
        this.suspend("background");
      }, this.options.backgroundGraceMs);
    }
  }

  private setState(state: ConnectionState): void {
    if (state === this.current) return;
    this.current = state;
    for (const listener of [...this.stateListeners]) listener(state);
  }

  private clearTimer(name: "retryTimer" | "welcomeTimer" | "backgroundTimer"): void {
    const timer = this[name];
    if (timer !== null) clearTimeout(timer);
    this[name] = null;
  }

  // --- events ---------------------------------------------------------------------------------------------
  private readonly onEvent = (event: string, raw: unknown): void => {
    const payload: Payload = raw !== null && typeof raw === "object" ? (raw as Payload) : {};
    const { stream, eventId } = payload;
    if (typeof stream === "string" && typeof eventId === "string") {
      if (isOptional(stream) && !this.wantsStream(stream)) return; // in flight when the app unsubscribed
      const held = this.holding.get(stream);
      if (held !== undefined) held.push([event, payload]);
      else this.accept(event, stream, eventId, payload);
      return;
    }
    // Control events move `seen` as they arrive (later events are judged against it); what is saved moves in
    // the queue, after the handlers of everything before (a `resync` is never lost to an app stopped meanwhile).
    if (event === "stream:resync_required" && typeof stream === "string") {
      this.offsets.unsee(stream);
      const reason = payload.reason as RealtimeEvents["resync"]["reason"];
      // The saved offset stays until a new start replaces it: an app stopped before that is told again.
      this.enqueue(() => this.dispatch("resync", { stream, reason }));
    } else if (event === "stream:resumed") {
      this.clearTimer("welcomeTimer");
      this.welcomed(payload as unknown as StreamResumed);
      return;
    } else if (event === "session:ended") {
      this.ended = payload.reason as SessionEnded["reason"];
    } else if (event === "auth:expired") {
      void this.refreshToken();
    }
    this.enqueue(() => this.dispatch(event as RealtimeEventName, payload as never));
  };

  private welcomed(resumed: StreamResumed): void {
    const session = this.session;
    for (const stream of resumed.refused) this.offsets.unsee(stream);
    for (const [stream, id] of Object.entries(resumed.offsets)) this.offsets.start(stream, id);
    this.joined.clear();
    for (const stream of Object.keys(this.sentOffsets)) {
      if (isOptional(stream) && !resumed.refused.includes(stream)) this.joined.add(stream);
    }
    this.enqueue(() => {
      for (const stream of resumed.refused) this.offsets.drop(stream);
      for (const [stream, id] of Object.entries(resumed.offsets)) this.offsets.reset(stream, id);
    });
    this.enqueue(() => this.dispatch("stream:resumed", resumed));
    this.enqueue(() => this.goLive(session));
  }

  private accept(event: string, stream: string, eventId: string, payload: Payload): void {
    const verdict = this.offsets.admit(stream, eventId);
    if (verdict === "duplicate") {
      this.duplicates += 1;
      return;
    }
    this.enqueue(async () => {
      if (verdict === "epoch_changed") await this.dispatch("resync", { stream, reason: "epoch_changed" });
      await this.dispatch(event as RealtimeEventName, payload as never);
      this.offsets.settle(stream, eventId);
    });
  }

  private enqueue(step: Step): void {
    this.queue.push(step);
    if (this.running) return;
    this.running = true; // set before the first step runs: a step may enqueue synchronously
    this.draining = this.drain();
  }

  /** One step at a time: a handler that returns a Promise holds the next event until it settles. */
  private async drain(): Promise<void> {
    for (let step = this.queue.shift(); step !== undefined; step = this.queue.shift()) {
      try {
        await step();
      } catch (error) {
        this.onError(error);
      }
    }
    this.running = false;
    this.draining = null;
  }

  private async dispatch<E extends RealtimeEventName>(event: E, payload: RealtimeEvents[E]): Promise<void> {
    const set = this.handlers.get(event);
    if (set === undefined) return;
    for (const { handler } of [...set]) {
      try {
        const result = (handler as Handler<E>)(payload);
        if (result !== undefined) await result;
      } catch (error) {
        this.onError(error); // the event counts as handled: one failing handler must not replay it forever
      }
    }
  }

  // --- requests -------------------------------------------------------------------------------------------
  private async request<T>(event: string, payload: Payload): Promise<T> {
    for (let tries = 0; ; tries += 1) {
      if (!this.socket.connected) throw new RealtimeError("not_connected", `${event}: not connected`);
      let ack: unknown;
      try {
        ack = await this.socket.timeout(this.options.ackTimeoutMs).emitWithAck(event, payload);
      } catch {
        throw new RealtimeError("timeout", `${event}: no ack within ${this.options.ackTimeoutMs} ms`);
      }
      const answer = (ack ?? {}) as { success?: boolean; error?: { code: RealtimeError["code"]; message: string } };
      if (answer.success !== false) return ack as T;
      const error = answer.error ?? { code: "invalid_request", message: "refused" };
      const retryAfter = Number((error as { retryAfterMs?: number }).retryAfterMs ?? 0);
      if (error.code !== "rate_limited" || tries >= RATE_LIMIT_RETRIES) {
        throw new RealtimeError(error.code, error.message, { ...error });
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(Math.max(retryAfter, 50), 30_000)));
    }
  }

  private async refreshToken(): Promise<void> {
    try {
      const token = await this.tokens.get(true);
      this.token = token;
      await this.request<AuthRefreshAck>("auth:refresh", { token });
    } catch (error) {
      this.onError(error); // the gateway ends the session after its grace; the reconnect takes a fresh token
    }
  }

  private wantsStream(stream: string): boolean {
    return stream.startsWith("property:") && this.properties.has(stream.slice("property:".length));
  }

  /** Events of `stream` wait while its subscribe is in flight: the ack's snapshot is applied before them. */
  private requestSubscribe(propertyId: string): void {
    const subscription = this.properties.get(propertyId);
    if (subscription === undefined || subscription.inFlight) return;
    subscription.inFlight = true;
    const stream = propertyStream(propertyId);
    if (!this.holding.has(stream)) this.holding.set(stream, []);
    this.request<SubscribeAck>("subscribe:property", { propertyId }).then(
      (ack) => this.enqueue(() => this.applySubscribe(propertyId, stream, ack)),
      (error: unknown) => {
        subscription.inFlight = false;
        this.release(stream);
        if (error instanceof RealtimeError && (error.code === "not_connected" || error.code === "timeout")) {
          return; // made again at the next welcome
        }
        for (const waiter of subscription.waiters.splice(0)) waiter.reject(error);
      },
    );
  }

  private async applySubscribe(propertyId: string, stream: string, ack: SubscribeAck): Promise<void> {
    const subscription = this.properties.get(propertyId);
    if (subscription !== undefined) subscription.inFlight = false;
    if (subscription === undefined) {
      this.release(stream);
      if (this.socket.connected) void this.request("unsubscribe:property", { propertyId }).catch(this.onError);
      return;
    }
    if (!this.joined.has(stream) && typeof ack.offset === "string") {
      // Joined just now: live from the ack's offset, the snapshot covers what came before. (Events accepted
      // after it already, released by a lost connection, keep their place.)
      if (this.offsets.admit(stream, ack.offset) !== "duplicate") this.offsets.reset(stream, ack.offset);
    }
    this.joined.add(stream);
    await this.dispatch("property:snapshot", { propertyId, stream, funding: ack.funding ?? null });
    for (const waiter of subscription.waiters.splice(0)) waiter.resolve(ack);
    await Promise.resolve(); // callbacks on the subscribe promise run before the events that waited
    this.release(stream);
  }

  private release(stream: string): void {
    const held = this.holding.get(stream);
    this.holding.delete(stream);
    if (!this.wantsStream(stream)) return; // unsubscribed while they waited
    for (const [event, payload] of held ?? []) {
      this.accept(event, stream, payload.eventId as string, payload);
    }
  }
}
