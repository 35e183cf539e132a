// Drives @blocks-rt/client (the built dist/) against real gateways for tests/test_typescript_client.py.
// Reads one JSON command per line on stdin, answers each with one JSON line on stdout ({seq, ...} or {seq, error}).
// Tokens are minted here (HS256 with the secret given) so a test can make them as short-lived as it wants.
import { createHmac } from "node:crypto";
import { readFile, rename, writeFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { BlocksRealtime } from "../../dist/index.js";

const STREAM_EVENTS = ["wallet:balance_updated", "investment:created", "investment:confirmed",
  "transaction:status_changed", "reward:distributed", "notification:new", "portfolio:updated",
  "property:funding_updated", "property:status_changed", "announcement:new", "organization:updated"];
const clients = new Map();

const b64 = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

function mint(secret, sub, ttlS) {
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, iat: now, exp: now + ttlS })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/** AsyncStorage's shape over a JSON file: what an app's disk is across a restart. */
function fileStorage(path) {
  const read = async () => JSON.parse(await readFile(path, "utf8").catch(() => "{}"));
  return {
    getItem: async (key) => (await read())[key] ?? null,
    setItem: async (key, value) => {
      const items = await read();
      items[key] = value;
      await writeFile(`${path}.tmp`, JSON.stringify(items));
      await rename(`${path}.tmp`, path);
    },
    removeItem: async (key) => {
      const items = await read();
      delete items[key];
      await writeFile(path, JSON.stringify(items));
    },
  };
}

function start({ id, url, user, secret, ttlS = 3600, storage, handlerDelayMs = 0, properties = [] }) {
  const record = { handled: [], byStream: {}, resyncs: [], states: [], tokens: 0, expired: 0, errors: [],
                   waiters: [], subscribed: [] };
  const rt = new BlocksRealtime({
    url, storage: fileStorage(storage), backoff: { minMs: 100, maxMs: 2000 },
    getToken: () => {
      record.tokens += 1;
      return mint(secret, user, ttlS);
    },
    onError: (error) => record.errors.push(String(error)),
  });
  for (const event of STREAM_EVENTS) {
    rt.on(event, async (payload) => {
      if (handlerDelayMs) await new Promise((resolve) => setTimeout(resolve, handlerDelayMs));
      record.handled.push(payload.eventId);
      (record.byStream[payload.stream] ??= []).push(payload.eventId);
      record.waiters = record.waiters.filter((w) => !w());
    });
  }
  rt.on("resync", (event) => void record.resyncs.push(event));
  rt.on("auth:expired", () => void (record.expired += 1));
  rt.onStateChange((state) => record.states.push(state));
  // Subscribed before connecting, as a screen's effect runs before the provider's: the streams resume too.
  record.subscribed = properties.map((propertyId) => rt.subscribeToProperty(propertyId));
  clients.set(id, { rt, record });
  return {};
}

/** Until `id` has handled `count` events in all (bounded). */
function waitFor({ id, count, timeoutMs = 30000 }) {
  const { record } = clients.get(id);
  return new Promise((resolve, reject) => {
    const done = () => record.handled.length >= count && (resolve({ handled: record.handled.length }), true);
    if (done()) return;
    const timer = setTimeout(() => reject(new Error(`${id}: ${record.handled.length} of ${count} handled`)),
      timeoutMs);
    record.waiters.push(() => done() && (clearTimeout(timer), true));
  });
}

/** Connect, disconnect `cycles` times on one client: its listeners and the heap must stay flat. */
async function soak({ url, user, secret, cycles, storage }) {
  start({ id: "soak", url, user, secret, storage });
  const { rt } = clients.get("soak");
  const socket = rt.socket; // private: the listener count of the socket.io-client Socket under the client
  const sample = () => {
    global.gc();
    return { heap: process.memoryUsage().heapUsed, listeners: rt.listenerCount(),
             socketListeners: socket.listeners("connect").length + socket.listeners("disconnect").length
               + socket.listeners("connect_error").length + socket.listenersAny().length };
  };
  const samples = { 0: sample() };
  for (let cycle = 1; cycle <= cycles; cycle += 1) {
    await rt.connect();
    rt.disconnect();
    if (cycle === 100 || cycle === cycles) {
      await rt.flush();
      await new Promise((resolve) => setTimeout(resolve, 50));
      samples[cycle] = sample();
    }
  }
  clients.delete("soak");
  return { samples, state: rt.state };
}

const commands = {
  start,
  waitFor,
  soak,
  async connect({ id }) {
    const began = performance.now();
    const { rt, record } = clients.get(id);
    await rt.connect();
    await Promise.all(record.subscribed);
    return { ms: performance.now() - began };
  },
  async disconnect({ id }) {
    const { rt } = clients.get(id);
    rt.disconnect();
    await rt.flush();
    return {};
  },
  /** A new app on the same storage, timed from its construction to live with `count` events handled. */
  async restart({ id, count, ...options }) {
    const began = performance.now();
    start({ id, ...options });
    await clients.get(id).rt.connect();
    await waitFor({ id, count });
    return { ms: performance.now() - began };
  },
  report({ id }) {
    const { rt, record } = clients.get(id);
    return { handled: record.handled, byStream: record.byStream, resyncs: record.resyncs, states: record.states, tokens: record.tokens,
             expired: record.expired,
             errors: record.errors, duplicates: rt.duplicates, state: rt.state, listeners: rt.listenerCount() };
  },
};

const say = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
for await (const line of createInterface({ input: process.stdin })) {
  const { seq, cmd, ...args } = JSON.parse(line);
  Promise.resolve()
    .then(() => commands[cmd](args))
    .then((answer) => say({ seq, ...answer }), (error) => say({ seq, error: String(error?.stack ?? error) }));
}
for (const { rt } of clients.values()) rt.disconnect();
