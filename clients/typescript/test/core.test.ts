import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { BlocksRealtime, memoryStorage, RealtimeError, type RealtimeOptions, type RealtimeStorage } from "../src/index.js";
import { type FakeGateway, resetGateway } from "./fake-gateway.js";

vi.mock("socket.io-client", async () => (await import("./fake-gateway.js")).socketModule);

let gw: FakeGateway;
const clients: BlocksRealtime[] = [];

function client(options: Partial<RealtimeOptions> = {}): BlocksRealtime {
  const rt = new BlocksRealtime({ url: "http://gw", getToken: () => "t0", random: () => 1, onError: () => undefined,
                                  ...options });
  clients.push(rt);
  return rt;
}

/** Let every pending promise and due timer run (fake timers). */
async function settle(ms = 0): Promise<void> {
  await vi.advanceTimersByTimeAsync(ms);
  for (let i = 0; i < 20; i += 1) await Promise.resolve();
}

beforeEach(() => {
  vi.useFakeTimers();
  gw = resetGateway();
});

afterEach(() => {
  clients.splice(0).forEach((rt) => rt.disconnect());
  vi.useRealTimers();
});

describe("resume", () => {
  it("connect() resolves once the replay is handled; offsets are saved only after a handler settled", async () => {
    const storage = memoryStorage();
    gw.log("user:u1");
    gw.log("user:u1");
    await storage.setItem("blocks-rt:offsets", JSON.stringify({ "user:u1": "e1:1001-0" }));
    const rt = client({ storage });
    const handled: string[] = [];
    let finish!: () => void;
    rt.on("wallet:balance_updated", (e) => {
      handled.push(e.eventId);
      return new Promise<void>((resolve) => (finish = resolve));
    });
    const states: string[] = [];
    rt.onStateChange((s) => states.push(s));
    let live = false;
    const connecting = rt.connect().then(() => (live = true));
    await settle();
    expect(gw.handshakes[0]).toEqual({ token: "t0", offsets: { "user:u1": "e1:1001-0" } });
    expect(handled).toEqual(["e1:1002-0"]);
    expect(live).toBe(false); // the replay is not handled yet
    expect(await storage.getItem("blocks-rt:offsets")).toBe(JSON.stringify({ "user:u1": "e1:1001-0" }));
    finish();
    await connecting;
    await rt.flush();
    expect(states).toEqual(["connecting", "live"]);
    expect(await storage.getItem("blocks-rt:offsets")).toBe(JSON.stringify({ "user:u1": "e1:1002-0" }));
  });

  it("drops an event at or below the offset and keeps log order", async () => {
    const rt = client();
    const handled: string[] = [];
    rt.on("wallet:balance_updated", (e) => void handled.push(e.eventId));
    await rt.connect();
    const first = gw.publish("user:u1");
    const second = gw.publish("user:u1");
    gw.live!.serverEmit(first);
    gw.live!.serverEmit(second);
    await settle();
    expect(handled).toEqual([first.payload.eventId, second.payload.eventId]);
    expect(rt.duplicates).toBe(2);
  });

  it("a new client on the same storage resumes where the last one's handlers finished", async () => {
    const storage = memoryStorage();
    const first = client({ storage });
    const seen: string[] = [];
    first.on("wallet:balance_updated", (e) => void seen.push(e.eventId));
    await first.connect();
    gw.publish("user:u1");
    await settle();
    first.disconnect();
    await first.flush();
    gw.log("user:u1"); // while the app is closed
    const second = client({ storage });
    second.on("wallet:balance_updated", (e) => void seen.push(e.eventId));
    await second.connect();
    expect(seen).toEqual(["e1:1001-0", "e1:1002-0"]);
  });

  it("raises resync and clears the offset on stream:resync_required and on an epoch change", async () => {
    const storage = memoryStorage();
    await storage.setItem("blocks-rt:offsets", JSON.stringify({ "user:u1": "e0:5-0" }));
    const rt = client({ storage });
    const resyncs: unknown[] = [];
    rt.on("resync", (e) => void resyncs.push(e));
    await rt.connect();
    expect(resyncs).toEqual([{ stream: "user:u1", reason: "epoch_changed" }]);
    gw.flipEpoch();
    gw.publish("user:u1");
    await settle();
    expect(resyncs).toEqual([{ stream: "user:u1", reason: "epoch_changed" },
                             { stream: "user:u1", reason: "epoch_changed" }]);
    await rt.flush();
    expect(JSON.parse((await storage.getItem("blocks-rt:offsets"))!)).toEqual({ "user:u1": "e2:1001-0" });
  });
});

describe("tokens", () => {
  it("calls getToken single-flight and answers auth:expired with auth:refresh and a fresh token", async () => {
    const getToken = vi.fn(async ({ forceRefresh }: { forceRefresh: boolean }) => (forceRefresh ? "fresh" : "t0"));
    const rt = client({ getToken });
    await rt.connect();
    gw.live!.serverEmit({ event: "auth:expired", payload: { graceSeconds: 30, message: "refresh" } });
    gw.live!.serverEmit({ event: "auth:expired", payload: { graceSeconds: 30, message: "refresh" } });
    await settle();
    expect(getToken.mock.calls.map(([o]) => o.forceRefresh)).toEqual([false, true]);
    expect(gw.requests.filter((r) => r.event === "auth:refresh").map((r) => r.payload)).toContainEqual({
      token: "fresh" });
  });

  it("a refused token gets one fresh token and one retry, then `unauthorized` with no loop", async () => {
    gw.refuse = "token_expired";
    const getToken = vi.fn((_: { forceRefresh: boolean }) => "old");
    const rt = client({ getToken });
    const connecting = rt.connect();
    await expect(connecting).rejects.toMatchObject({ code: "token_expired" });
    expect(rt.state).toBe("unauthorized");
    await settle(120_000);
    expect(gw.handshakes).toHaveLength(2);
    expect(getToken.mock.calls.map(([o]) => o.forceRefresh)).toEqual([false, true]);
  });

  it("a refusal a fresh token cannot fix rejects at once", async () => {
    gw.refuse = "user_inactive";
    const rt = client();
    await expect(rt.connect()).rejects.toBeInstanceOf(RealtimeError);
    expect(gw.handshakes).toHaveLength(1);
  });

  it("after a session ended for an expired token, reconnects with a fresh token", async () => {
    const getToken = vi.fn(({ forceRefresh }: { forceRefresh: boolean }) => (forceRefresh ? "fresh" : "t0"));
    const rt = client({ getToken });
    await rt.connect();
    gw.live!.serverEmit({ event: "session:ended", payload: { reason: "token_expired", message: "" } });
    gw.live!.drop("io server disconnect");
    await settle();
    expect(rt.state).toBe("live");
    expect(gw.handshakes.map((h) => h.token)).toEqual(["t0", "fresh"]);
  });
});

describe("reconnection", () => {
  it("never gives up, waiting a full-jitter backoff capped at 30 s", async () => {
    const rt = client({ random: () => 1 });
    await rt.connect();
    gw.acceptConnects = false;
    gw.live!.drop();
    expect(rt.state).toBe("reconnecting");
    const delays = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000];
    for (const delay of delays) {
      const before = gw.sockets[0]!;
      await settle(delay - 1);
      const attempts = (before as unknown as { attempt: number }).attempt;
      await settle(1);
      expect((before as unknown as { attempt: number }).attempt).toBe(attempts + 1);
    }
    gw.acceptConnects = true;
    await settle(30_000);
    expect(rt.state).toBe("live");
  });

  it("server_shutdown reconnects at once; too_many_sockets closes with its reason", async () => {
    const rt = client({ random: () => 1 });
    await rt.connect();
    gw.live!.serverEmit({ event: "session:ended", payload: { reason: "server_shutdown", message: "" } });
    gw.live!.drop("io server disconnect");
    await settle();
    expect(rt.state).toBe("live");
    gw.live!.serverEmit({ event: "session:ended", payload: { reason: "too_many_sockets", message: "" } });
    gw.live!.drop("io server disconnect");
    await settle(60_000);
    expect(rt.state).toBe("closed");
    expect(rt.closeReason).toBe("too_many_sockets");
    expect(gw.handshakes).toHaveLength(2);
  });
});

describe("lifecycle and network", () => {
  function adapter(initial: boolean) {
    let value = initial;
    const listeners = new Set<(v: boolean) => void>();
    return {
      get: () => value,
      set(v: boolean) { value = v; listeners.forEach((l) => l(v)); },
      subscribe(l: (v: boolean) => void) { listeners.add(l); return () => void listeners.delete(l); },
      listeners,
    };
  }

  it("disconnects after the background grace and reconnects at once on return", async () => {
    const app = adapter(true);
    const rt = client({ lifecycle: { isActive: app.get, subscribe: app.subscribe }, backgroundGraceMs: 10_000 });
    await rt.connect();
    app.set(false);
    await settle(9_999);
    expect(rt.state).toBe("live");
    await settle(1);
    expect(rt.state).toBe("offline");
    await settle(120_000);
    expect(gw.handshakes).toHaveLength(1); // no attempts in the background
    gw.publish("user:u1");
    const handled: string[] = [];
    rt.on("wallet:balance_updated", (e) => void handled.push(e.eventId));
    app.set(true);
    await settle();
    expect(rt.state).toBe("live");
    expect(handled).toHaveLength(1); // resumed
  });

  it("offline: no attempts; online: reconnects now", async () => {
    const net = adapter(false);
    const rt = client({ network: { isOnline: net.get, subscribe: net.subscribe } });
    void rt.connect();
    await settle(60_000);
    expect(rt.state).toBe("offline");
    expect(gw.handshakes).toHaveLength(0);
    net.set(true);
    await settle();
    expect(rt.state).toBe("live");
    rt.disconnect();
    expect(net.listeners.size).toBe(0);
  });
});

describe("requests", () => {
  it("times out with a typed error; fails at once when not connected", async () => {
    const rt = client({ ackTimeoutMs: 2_000 });
    await rt.connect();
    gw.answer = (event) => (event === "unsubscribe:property" ? "never" : undefined);
    await rt.subscribeToProperty("p1");
    const leaving = rt.unsubscribeFromProperty("p1");
    const check = expect(leaving).rejects.toMatchObject({ code: "timeout" });
    await settle(2_000);
    await check;
    gw.live!.drop();
    const sent = gw.requests.length;
    const waiting = rt.subscribeToProperty("p2"); // made at the next welcome, never buffered in the socket
    await expect(rt.unsubscribeFromProperty("p2")).resolves.toBeUndefined();
    await expect(waiting).rejects.toMatchObject({ code: "unsubscribed" });
    expect(gw.requests).toHaveLength(sent);
  });

  it("waits retryAfterMs when rate limited, then retries", async () => {
    const rt = client();
    await rt.connect();
    let refusals = 1;
    gw.answer = (event) => (event === "subscribe:property" && refusals-- > 0
      ? { success: false, error: { code: "rate_limited", message: "slow down", retryAfterMs: 700 } } : undefined);
    let ack: unknown;
    void rt.subscribeToProperty("p1").then((a) => (ack = a));
    await settle(699);
    expect(ack).toBeUndefined();
    await settle(1);
    expect(ack).toMatchObject({ success: true, room: "property:p1" });
    expect(gw.requests.filter((r) => r.event === "subscribe:property")).toHaveLength(2);
  });
});

describe("subscriptions", () => {
  it("are counted, made again after a reconnect, and the snapshot comes before the events that waited", async () => {
    const rt = client();
    await rt.connect();
    const order: string[] = [];
    rt.on("property:snapshot", () => void order.push("snapshot"));
    rt.on("property:funding_updated", (e) => void order.push(e.eventId));
    gw.answer = (event, payload, socket) => {
      if (event === "subscribe:property") socket.rooms.add("property:p1");
      // an event logged after the join reaches the socket before the ack, as with the gateway's join_live
      if (event === "subscribe:property") gw.publish("property:p1", "property:funding_updated", { propertyId: "p1" });
      return undefined;
    };
    const [a, b] = await Promise.all([rt.subscribeToProperty("p1"), rt.subscribeToProperty("p1")]);
    expect(a).toBe(b);
    await settle();
    expect(order).toEqual(["snapshot", "e1:1001-0"]);
    expect(gw.requests.filter((r) => r.event === "subscribe:property")).toHaveLength(1);
    gw.answer = () => undefined;
    gw.live!.drop();
    gw.log("property:p1", "property:funding_updated", { propertyId: "p1" });
    await settle(1_000);
    expect(gw.handshakes[1]!.offsets).toEqual({ "user:u1": "e1:0-0", "property:p1": "e1:1001-0" });
    expect(order).toEqual(["snapshot", "e1:1001-0", "e1:1002-0", "snapshot"]);
    await rt.unsubscribeFromProperty("p1");
    expect(gw.requests.filter((r) => r.event === "unsubscribe:property")).toHaveLength(0);
    await rt.unsubscribeFromProperty("p1");
    expect(gw.requests.filter((r) => r.event === "unsubscribe:property")).toHaveLength(1);
  });
});

describe("storage", () => {
  it("a failing storage is reported, never thrown into the connection", async () => {
    const errors: unknown[] = [];
    const broken: RealtimeStorage = { getItem: async () => null, setItem: async () => { throw new Error("full"); },
                                      removeItem: async () => undefined };
    const rt = client({ storage: broken, onError: (e) => void errors.push(e) });
    await rt.connect();
    gw.publish("user:u1");
    await settle();
    expect(errors).toHaveLength(2); // the welcome's fresh offset, then the event's
    expect(rt.state).toBe("live");
  });
});
