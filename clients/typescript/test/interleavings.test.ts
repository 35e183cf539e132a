// Property test: over random interleavings of live events, replays, duplicates, dropped connections, epoch flips,
// property subscriptions, clean app restarts and crashes, each event reaches the handlers exactly once and in log
// order per stream (at most once more only when an app crashed between a handler and the save of its offset), or
// its stream got a `resync` after it was logged. A property's events count from the first snapshot after the
// app subscribed (what came before is in the snapshot); an app restarted while subscribed subscribes again before
// it connects, as a screen's effect does under the provider's.
import fc from "fast-check";
import { afterEach, beforeEach, expect, it, vi } from "vitest";
import { BlocksRealtime, type RealtimeStorage } from "../src/index.js";
import { type FakeGateway, resetGateway } from "./fake-gateway.js";

vi.mock("socket.io-client", async () => (await import("./fake-gateway.js")).socketModule);

const STREAMS = ["user:u1", "announcements"] as const;
const PROPERTY = "property:p1";

/** Storage whose writes land a tick later; a crash loses the writes in flight and everything after. */
class CrashableStorage {
  readonly data = new Map<string, string>();
  private generation = 0;

  view(): RealtimeStorage {
    const generation = this.generation;
    const alive = () => generation === this.generation;
    return {
      getItem: async (key) => this.data.get(key) ?? null,
      setItem: async (key, value) => {
        await Promise.resolve();
        if (alive()) this.data.set(key, value);
      },
      removeItem: async (key) => void (alive() && this.data.delete(key)),
    };
  }

  crash(): void {
    this.generation += 1;
  }
}

const action = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant("publish" as const), stream: fc.constantFrom(...STREAMS) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("duplicate" as const), back: fc.nat(5) }) },
  { weight: 2, arbitrary: fc.constant({ kind: "drop" as const }) },
  { weight: 2, arbitrary: fc.constant({ kind: "settle" as const }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("tick" as const), n: fc.integer({ min: 1, max: 4 }) }) },
  { weight: 1, arbitrary: fc.constant({ kind: "restart" as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: "crash" as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: "flip" as const }) },
  { weight: 3, arbitrary: fc.constant({ kind: "property" as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: "subscribe" as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: "unsubscribe" as const }) },
);

let gw: FakeGateway;
beforeEach(() => {
  vi.useFakeTimers();
  gw = resetGateway();
  gw.fixed = [...STREAMS];
});
afterEach(() => vi.useRealTimers());

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i += 1) await vi.advanceTimersByTimeAsync(10);
}

it("each event is handled once, in order, across reconnects, restarts and crashes", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(action, { maxLength: 60 }), fc.array(fc.nat(3), { minLength: 1, maxLength: 8 }),
      async (actions, delays) => {
        gw = resetGateway();
        gw.fixed = [...STREAMS];
        const storage = new CrashableStorage();
        let clock = 0; // a logical time: when each event was logged, when each resync was handled
        const loggedAt = new Map<string, number>();
        const propertyLoggedAt = new Map<string, number>();
        const resyncs: { stream: string; at: number }[] = [];
        const handled = new Map<string, number[]>(); // event id → the instances that handled it
        const crashed = new Set<number>();
        const disorder: string[] = [];
        let subscribed = false;
        let countFrom: number | null = null; // when the property's events started to count (its first snapshot)
        let instance = 0;
        let rt: BlocksRealtime;
        const start = () => {
          instance += 1;
          const me = instance;
          let n = 0;
          rt = new BlocksRealtime({ url: "http://gw", getToken: () => "t", storage: storage.view(), random: () => 0,
                                    onError: () => undefined });
          const lastSeen = new Map<string, string>();
          for (const event of ["wallet:balance_updated", "announcement:new", "property:funding_updated"] as const) {
            rt.on(event, async (e) => {
              for (let i = delays[n++ % delays.length]!; i > 0; i -= 1) await Promise.resolve();
              if (crashed.has(me)) return; // a crashed app runs nothing more
              const last = lastSeen.get(e.stream);
              if (last !== undefined && last.split(":")[0] === e.eventId.split(":")[0] && e.eventId <= last) {
                disorder.push(`${e.eventId} after ${last}`); // an expect here would be caught as a handler error
              }
              lastSeen.set(e.stream, e.eventId);
              handled.set(e.eventId, [...(handled.get(e.eventId) ?? []), me]);
            });
          }
          rt.on("resync", ({ stream }) => void resyncs.push({ stream, at: clock++ }));
          rt.on("property:snapshot", () => {
            if (subscribed && countFrom === null && !crashed.has(me)) countFrom = clock++;
          });
          if (subscribed) void rt.subscribeToProperty("p1").catch(() => undefined);
          void rt.connect().catch(() => undefined);
        };
        start();
        await settle();
        for (const step of actions) {
          if (step.kind === "publish") {
            const entry = gw.publish(step.stream, step.stream === "announcements" ? "announcement:new"
                                                                                  : "wallet:balance_updated");
            loggedAt.set(entry.payload.eventId as string, clock++);
          } else if (step.kind === "duplicate") {
            const all = [...gw.logs.values()].flat();
            const entry = all[all.length - 1 - Math.min(step.back, all.length - 1)];
            if (entry) gw.live?.serverEmit(entry);
          } else if (step.kind === "drop") {
            gw.live?.drop();
          } else if (step.kind === "settle") {
            await settle();
          } else if (step.kind === "tick") {
            for (let i = 0; i < step.n; i += 1) await Promise.resolve(); // a handler or a write half done
          } else if (step.kind === "restart") {
            rt!.disconnect();
            await rt!.flush();
            start();
          } else if (step.kind === "crash") {
            storage.crash();
            countFrom = null; // the subscription's start may not have reached storage: the next snapshot covers it
            crashed.add(instance);
            rt!.disconnect();
            start();
          } else if (step.kind === "property") {
            const entry = gw.publish(PROPERTY, "property:funding_updated", { propertyId: "p1" });
            propertyLoggedAt.set(entry.payload.eventId as string, clock++);
          } else if (step.kind === "subscribe" && !subscribed) {
            subscribed = true;
            countFrom = null;
            void rt!.subscribeToProperty("p1").catch(() => undefined);
          } else if (step.kind === "unsubscribe" && subscribed) {
            subscribed = false;
            void rt!.unsubscribeFromProperty("p1").catch(() => undefined);
          } else if (step.kind === "flip") {
            gw.flipEpoch();
          }
        }
        await settle();
        await settle();
        expect(rt!.state).toBe("live");
        expect(disorder).toEqual([]);
        for (const [id, by] of handled) {
          const bySurvivors = by.filter((i) => !crashed.has(i));
          expect(bySurvivors.length, `${id} handled by ${by}`).toBeLessThanOrEqual(1);
          expect(new Set(by).size, `${id} twice in one app`).toBe(by.length);
        }
        for (const [id, at] of loggedAt) {
          const stream = [...gw.logs.entries()].find(([, log]) => log.some((e) => e.payload.eventId === id))?.[0];
          const covered = resyncs.some((r) => r.at > at && (stream === undefined || r.stream === stream));
          expect(handled.has(id) || covered, `${id} lost`).toBe(true);
        }
        if (subscribed && countFrom !== null) {
          for (const [id, at] of propertyLoggedAt) {
            const covered = resyncs.some((r) => r.at > at && r.stream === PROPERTY);
            expect(at < countFrom || handled.has(id) || covered, `${id} lost`).toBe(true);
          }
        }
        rt!.disconnect();
      }),
    { numRuns: 400 },
  );
});
