// A stand-in for socket.io-client's Socket, driven by a small model of the gateway's resume protocol
// (blocks_rt/delivery.py): on connect it reads `auth`, replays each stream after its offset (or asks for a resync),
// sends `stream:resumed`, then live events. Tests install it with vi.mock("socket.io-client").
type Listener = (...args: any[]) => void;
type Payload = Record<string, unknown>;

export interface LoggedEvent {
  event: string;
  payload: Payload;
}

export class FakeGateway {
  epoch = "e1";
  private ms = 1000;
  readonly logs = new Map<string, LoggedEvent[]>();
  /** Streams every socket has (the user's room, announcements). */
  fixed = ["user:u1"];
  retention = Infinity;
  refuse: string | null = null; // a connect_error code for the next connects
  acceptConnects = true;
  readonly sockets: FakeSocket[] = [];
  readonly handshakes: Payload[] = [];
  readonly requests: { event: string; payload: Payload }[] = [];
  /** Answers to client requests by event; default success. */
  answer: (event: string, payload: Payload, socket: FakeSocket) => unknown | undefined = () => undefined;

  log(stream: string, event = "wallet:balance_updated", extra: Payload = {}): LoggedEvent {
    this.ms += 1;
    const payload = { ...extra, eventId: `${this.epoch}:${this.ms}-0`, stream };
    const entry = { event, payload };
    const log = this.logs.get(stream) ?? [];
    log.push(entry);
    this.logs.set(stream, log);
    return entry;
  }

  head(stream: string): string {
    const log = this.logs.get(stream) ?? [];
    return (log[log.length - 1]?.payload.eventId as string | undefined) ?? `${this.epoch}:0-0`;
  }

  /** Log an event and send it to every connected socket in that room. */
  publish(stream: string, event = "wallet:balance_updated", extra: Payload = {}): LoggedEvent {
    const entry = this.log(stream, event, extra);
    for (const socket of this.sockets) if (socket.connected && socket.rooms.has(stream)) socket.serverEmit(entry);
    return entry;
  }

  /** The log is lost (a flushed Redis): a new epoch, nothing kept. */
  flipEpoch(): void {
    this.epoch = `e${Number(this.epoch.slice(1)) + 1}`;
    this.logs.clear();
  }

  get live(): FakeSocket | undefined {
    return this.sockets.find((s) => s.connected);
  }
}

export let gateway = new FakeGateway();

export function resetGateway(): FakeGateway {
  gateway = new FakeGateway();
  return gateway;
}

const later = (fn: () => void) => void Promise.resolve().then(fn);

export class FakeSocket {
  connected = false;
  readonly rooms = new Set<string>();
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly anyListeners = new Set<Listener>();
  private attempt = 0;

  constructor(readonly url: string, readonly options: { auth: (send: (data: Payload) => void) => void }) {
    gateway.sockets.push(this);
  }

  on(event: string, listener: Listener): this {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    return this;
  }

  onAny(listener: Listener): this {
    this.anyListeners.add(listener);
    return this;
  }

  listenerCount(): number {
    let n = this.anyListeners.size;
    for (const set of this.listeners.values()) n += set.size;
    return n;
  }

  private fire(event: string, ...args: unknown[]): void {
    for (const listener of [...(this.listeners.get(event) ?? [])]) listener(...args);
  }

  connect(): this {
    if (this.connected) return this;
    const attempt = ++this.attempt;
    later(() => {
      if (attempt !== this.attempt) return;
      if (!gateway.acceptConnects) {
        this.fire("connect_error", new Error("websocket error"));
        return;
      }
      this.options.auth((auth) => {
        gateway.handshakes.push(auth);
        if (gateway.refuse !== null) {
          const error = Object.assign(new Error("Authentication failed"), { data: { code: gateway.refuse } });
          this.fire("connect_error", error);
          return;
        }
        this.welcome((auth.offsets ?? {}) as Record<string, string>);
      });
    });
    return this;
  }

  private welcome(offsets: Record<string, string>): void {
    this.connected = true;
    const streams = [...new Set([...gateway.fixed, ...Object.keys(offsets)])];
    streams.forEach((s) => this.rooms.add(s));
    this.fire("connect");
    this.serverEmit({ event: "connected", payload: { userId: "u1", message: "hi", timestamp: "t" } });
    const fresh: Record<string, string> = {};
    const recovered: string[] = [];
    const resync: string[] = [];
    for (const stream of streams) {
      const offset = offsets[stream];
      if (offset === undefined) {
        fresh[stream] = gateway.head(stream);
        continue;
      }
      const [epoch] = offset.split(":");
      const log = gateway.logs.get(stream) ?? [];
      const after = log.filter((e) => (e.payload.eventId as string) > offset);
      if (epoch !== gateway.epoch || log.length - after.length > gateway.retention) {
        resync.push(stream);
        fresh[stream] = gateway.head(stream);
        this.serverEmit({ event: "stream:resync_required", payload: { stream,
          reason: epoch !== gateway.epoch ? "epoch_changed" : "retention_exceeded" } });
        continue;
      }
      after.forEach((e) => this.serverEmit(e));
      recovered.push(stream);
    }
    this.serverEmit({ event: "stream:resumed", payload: { recovered, resyncRequired: resync, refused: [],
                                                          offsets: fresh } });
  }

  /** The server sends one event to this socket. */
  serverEmit(entry: LoggedEvent): void {
    if (!this.connected) return;
    for (const listener of [...this.anyListeners]) listener(entry.event, structuredClone(entry.payload));
  }

  /** The connection is lost (or closed by the server) with `reason`. */
  drop(reason = "transport close"): void {
    if (!this.connected) return;
    this.connected = false;
    this.rooms.clear();
    this.fire("disconnect", reason);
  }

  disconnect(): this {
    this.attempt += 1;
    if (this.connected) {
      this.connected = false;
      this.rooms.clear();
      this.fire("disconnect", "io client disconnect");
    }
    return this;
  }

  timeout(ms: number): { emitWithAck: (event: string, payload: Payload) => Promise<unknown> } {
    return {
      emitWithAck: (event, payload) => new Promise((resolve, reject) => {
        gateway.requests.push({ event, payload });
        const room = `property:${String(payload.propertyId)}`;
        const joined = this.rooms.has(room);
        // As the gateway: a subscribe joins the room, then reads the offset it is live from (join_live); the
        // ack follows, so live events can reach the socket before it.
        if (event === "subscribe:property") this.rooms.add(room);
        if (event === "unsubscribe:property") this.rooms.delete(room);
        const offset = gateway.head(room);
        const session = this.attempt;
        const answer = gateway.answer(event, payload, this);
        if (answer === "never") {
          setTimeout(() => reject(new Error("operation has timed out")), ms);
          return;
        }
        later(() => {
          if (!this.connected || session !== this.attempt) return reject(new Error("socket has been disconnected"));
          if (answer !== undefined) return resolve(answer);
          if (event === "subscribe:property") {
            resolve({ success: true, room, offset: joined ? gateway.head(room) : offset,
                      funding: { id: payload.propertyId, title: "t", totalTokens: 10, soldTokens: 1,
                                 availableTokens: 9, fundingProgress: 10 } });
          } else if (event === "unsubscribe:property") {
            resolve({ success: true, room });
          } else {
            resolve({ success: true, expiresAt: 0 });
          }
        });
      }),
    };
  }
}

export const socketModule = {
  io: (url: string, options: { auth: (send: (data: Payload) => void) => void }) => new FakeSocket(url, options),
};
