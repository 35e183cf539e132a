// Offsets per stream: `seen` (accepted for its handlers, in memory) and `saved` (its handlers settled, in storage).
// A reconnect resumes from `seen` (what is queued will still be handled in this process); a new process resumes
// from `saved`. The one window left: the app dies after a handler settled and before its offset reached storage.
import type { RealtimeStorage } from "./storage.js";

/** `<epoch>:<ms>-<seq>`, as the gateway stamps it (blocks_rt/eventlog.py). */
interface Position {
  epoch: string;
  ms: number;
  seq: number;
}

const EVENT_ID = /^([^:]+):(\d+)-(\d+)$/;

export function parseEventId(id: string): Position | null {
  const match = EVENT_ID.exec(id);
  return match ? { epoch: match[1]!, ms: Number(match[2]), seq: Number(match[3]) } : null;
}

export type Admission = "new" | "duplicate" | "epoch_changed";

/** Whether event `id` comes after `last` in the same stream (ids that do not parse are never dropped). */
export function admission(id: string, last: string | undefined): Admission {
  const next = parseEventId(id);
  const prev = last === undefined ? null : parseEventId(last);
  if (next === null || prev === null) return "new";
  if (next.epoch !== prev.epoch) return "epoch_changed";
  return next.ms < prev.ms || (next.ms === prev.ms && next.seq <= prev.seq) ? "duplicate" : "new";
}

export class OffsetBook {
  private readonly seen = new Map<string, string>();
  private readonly saved = new Map<string, string>();
  private dirty = false;
  private writing: Promise<void> | null = null;
  private loading: Promise<void> | null = null;

  constructor(
    private readonly storage: RealtimeStorage,
    private readonly key: string,
    private readonly onError: (error: unknown) => void,
  ) {}

  /** Read the saved offsets once (the first connect waits for it). */
  load(): Promise<void> {
    this.loading ??= this.storage.getItem(this.key).then(
      (text) => {
        const stored: unknown = text ? JSON.parse(text) : {};
        if (stored && typeof stored === "object") {
          for (const [stream, id] of Object.entries(stored)) {
            if (typeof id === "string" && !this.saved.has(stream)) this.saved.set(stream, id);
          }
        }
        this.rewind();
      },
      (error: unknown) => this.onError(error),
    );
    return this.loading;
  }

  /** Record `id` as accepted unless it is at or below what was accepted already. */
  admit(stream: string, id: string): Admission {
    const verdict = admission(id, this.seen.get(stream));
    if (verdict !== "duplicate") this.seen.set(stream, id);
    return verdict;
  }

  /** The handlers of `id` settled: save it. (`seen` moves too when a rewind left it behind, never across epochs.) */
  settle(stream: string, id: string): void {
    this.saved.set(stream, id);
    const last = this.seen.get(stream);
    if (last === undefined || admission(id, last) === "new") this.seen.set(stream, id);
    this.persist();
  }

  /** Arrival of a position to start from (a fresh stream's head): later arrivals are judged against it. */
  start(stream: string, id: string): void {
    this.seen.set(stream, id);
  }

  /** Arrival of a resync: whatever comes next on `stream` is new. */
  unsee(stream: string): void {
    this.seen.delete(stream);
  }

  /** Save a position that no handler has to see first, once what came before it was handled. */
  reset(stream: string, id: string): void {
    if (!this.seen.has(stream)) this.seen.set(stream, id);
    this.saved.set(stream, id);
    this.persist();
  }

  drop(stream: string): void {
    this.seen.delete(stream);
    if (this.saved.delete(stream)) this.persist();
  }

  has(stream: string): boolean {
    return this.seen.has(stream);
  }

  /** Forget what was accepted but not handled (the queue was dropped): it will be replayed. */
  rewind(): void {
    this.seen.clear();
    for (const [stream, id] of this.saved) this.seen.set(stream, id);
  }

  /** What to send as `auth.offsets`, for the streams `wanted` says. */
  forConnect(wanted: (stream: string) => boolean, limit: number): Record<string, string> {
    const offsets: Record<string, string> = {};
    let count = 0;
    for (const [stream, id] of this.seen) {
      if (count < limit && wanted(stream)) {
        offsets[stream] = id;
        count += 1;
      }
    }
    return offsets;
  }

  savedOffsets(): Record<string, string> {
    return Object.fromEntries(this.saved);
  }

  /** Resolves once every offset saved so far is in storage. */
  async flush(): Promise<void> {
    if (this.dirty && this.writing === null) this.persist();
    while (this.writing !== null) await this.writing;
  }

  private persist(): void {
    this.dirty = true;
    this.writing ??= this.write();
  }

  private async write(): Promise<void> {
    // One write at a time, the latest state each time: a burst of events costs one or two writes, not one each.
    while (this.dirty) {
      this.dirty = false;
      try {
        await this.storage.setItem(this.key, JSON.stringify(Object.fromEntries(this.saved)));
      } catch (error) {
        this.onError(error);
      }
    }
    this.writing = null;
  }
}
