// The React Native adapters with stand-ins for AppState and NetInfo, driving a client through them.
import { afterEach, beforeEach, expect, it, vi } from "vitest";
import { BlocksRealtime, webStorage } from "../src/index.js";
import { appStateLifecycle, type AppStateLike, netInfoNetwork, type NetInfoLike,
         type NetInfoStateLike } from "../src/react-native/index.js";
import { type FakeGateway, resetGateway } from "./fake-gateway.js";

vi.mock("socket.io-client", async () => (await import("./fake-gateway.js")).socketModule);

let gw: FakeGateway;
beforeEach(() => {
  vi.useFakeTimers();
  gw = resetGateway();
});
afterEach(() => vi.useRealTimers());

function fakeAppState(): AppStateLike & { set(state: string): void; listeners: number } {
  const listeners = new Set<(state: string) => void>();
  return {
    currentState: "active",
    set(state) { this.currentState = state; listeners.forEach((l) => l(state)); },
    addEventListener: (_type, listener) => {
      listeners.add(listener);
      return { remove: () => void listeners.delete(listener) };
    },
    get listeners() { return listeners.size; },
  };
}

function fakeNetInfo(): NetInfoLike & { set(state: NetInfoStateLike): void } {
  const listeners = new Set<(state: NetInfoStateLike) => void>();
  return {
    set: (state) => listeners.forEach((l) => l(state)),
    addEventListener: (listener) => {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },
  };
}

it("AppState: background and inactive start the grace, active comes back at once", async () => {
  const appState = fakeAppState();
  const rt = new BlocksRealtime({ url: "http://gw", getToken: () => "t", lifecycle: appStateLifecycle(appState),
                                  backgroundGraceMs: 5_000, onError: () => undefined });
  await rt.connect();
  appState.set("inactive");
  appState.set("background");
  await vi.advanceTimersByTimeAsync(5_000);
  expect(rt.state).toBe("offline");
  appState.set("active");
  await vi.advanceTimersByTimeAsync(0);
  expect(rt.state).toBe("live");
  expect(gw.handshakes).toHaveLength(2);
  rt.disconnect();
  expect(appState.listeners).toBe(0);
});

it("NetInfo: offline when not connected or not reachable, unknown counts as online", async () => {
  const netInfo = fakeNetInfo();
  const rt = new BlocksRealtime({ url: "http://gw", getToken: () => "t", network: netInfoNetwork(netInfo),
                                  onError: () => undefined });
  await rt.connect();
  netInfo.set({ isConnected: true, isInternetReachable: null });
  expect(rt.state).toBe("live");
  netInfo.set({ isConnected: true, isInternetReachable: false });
  expect(rt.state).toBe("offline");
  await vi.advanceTimersByTimeAsync(60_000);
  expect(gw.handshakes).toHaveLength(1);
  netInfo.set({ isConnected: null });
  await vi.advanceTimersByTimeAsync(0);
  expect(rt.state).toBe("live");
  rt.disconnect();
});

it("webStorage wraps a synchronous storage", async () => {
  const items = new Map<string, string>();
  const storage = webStorage({ getItem: (k) => items.get(k) ?? null, setItem: (k, v) => void items.set(k, v),
                               removeItem: (k) => void items.delete(k) });
  await storage.setItem("a", "1");
  expect(await storage.getItem("a")).toBe("1");
  await storage.removeItem("a");
  expect(await storage.getItem("a")).toBeNull();
});
