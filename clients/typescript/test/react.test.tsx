// @vitest-environment jsdom
// The React bindings in jsdom, every render inside <StrictMode> (effects mount, unmount and mount again).
import { QueryClient } from "@tanstack/react-query";
import { act, cleanup, render, renderHook } from "@testing-library/react";
import { type ReactNode, StrictMode, useState } from "react";
import { afterEach, beforeEach, expect, it, vi } from "vitest";
import { BlocksRealtime } from "../src/index.js";
import { bindQueryClient, queryKeys, RealtimeProvider, useConnectionState, useProperty, useRealtimeEvent,
         useWalletBalance } from "../src/react/index.js";
import { type FakeGateway, resetGateway } from "./fake-gateway.js";

vi.mock("socket.io-client", async () => (await import("./fake-gateway.js")).socketModule);

let gw: FakeGateway;
let rt: BlocksRealtime;

beforeEach(() => {
  gw = resetGateway();
  rt = new BlocksRealtime({ url: "http://gw", getToken: () => "t", random: () => 0, onError: () => undefined });
});

afterEach(() => {
  cleanup();
  rt.disconnect();
});

function wrapper({ children }: { children?: ReactNode }) {
  return <StrictMode><RealtimeProvider client={rt}>{children}</RealtimeProvider></StrictMode>;
}

async function flush(): Promise<void> {
  await act(async () => {
    for (let i = 0; i < 20; i += 1) await new Promise((resolve) => setTimeout(resolve, 0));
  });
}

const balanceEvent = (usdc: number) => ({ userId: "u1", walletId: "w1", timestamp: "t",
  balance: { usdc, locked: 0, totalValue: usdc }, change: { amount: 1, type: "deposit", transactionId: "tx" } });

it("useConnectionState follows the client through StrictMode's double mount", async () => {
  const seen: string[] = [];
  const { result } = renderHook(() => {
    const state = useConnectionState();
    seen.push(state);
    return state;
  }, { wrapper });
  await flush();
  expect(result.current).toBe("live");
  act(() => gw.live!.drop());
  expect(result.current).toBe("reconnecting");
  await flush();
  expect(result.current).toBe("live");
  expect(new Set(seen)).toEqual(new Set(["idle", "connecting", "live", "reconnecting"]));
});

it("useRealtimeEvent keeps one listener, calls the latest handler, and leaves none after unmount", async () => {
  const calls: string[] = [];
  function Toasts() {
    const [label, setLabel] = useState("first");
    useRealtimeEvent("wallet:balance_updated", (e) => {
      calls.push(`${label}:${e.balance.usdc}`);
      setLabel("second");
    });
    return <span>{label}</span>;
  }
  const view = render(<Toasts />, { wrapper });
  await flush();
  expect(rt.listenerCount("wallet:balance_updated")).toBe(1);
  act(() => void gw.publish("user:u1", "wallet:balance_updated", balanceEvent(10)));
  await flush();
  act(() => void gw.publish("user:u1", "wallet:balance_updated", balanceEvent(20)));
  await flush();
  expect(calls).toEqual(["first:10", "second:20"]); // once each, with the handler of the latest render
  view.rerender(<Toasts />);
  expect(rt.listenerCount("wallet:balance_updated")).toBe(1);
  view.unmount();
  expect(rt.listenerCount()).toBe(0);
});

it("useProperty subscribes once, shows the snapshot then live funding, and unsubscribes on unmount", async () => {
  let state: ReturnType<typeof useProperty> | null = null;
  function Property() {
    state = useProperty("p1");
    return null;
  }
  let show!: (on: boolean) => void;
  function Screen() {
    const [shown, setShown] = useState(true);
    show = setShown;
    return shown ? <Property /> : null;
  }
  render(<Screen />, { wrapper });
  await flush();
  expect(state!.status).toBe("live");
  expect(state!.funding?.fundingProgress).toBe(10);
  act(() => void gw.publish("property:p1", "property:funding_updated", {
    propertyId: "p1", property: { id: "p1", title: "t", totalTokens: 10, soldTokens: 5, availableTokens: 5,
                                  fundingProgress: 50 } }));
  await flush();
  expect(state!.funding?.fundingProgress).toBe(50);
  const sent = (event: string) => gw.requests.filter((r) => r.event === event).length;
  expect(sent("subscribe:property")).toBe(1); // StrictMode's first mount was undone before the client was live
  act(() => show(false));
  await flush();
  expect(sent("unsubscribe:property")).toBe(1);
  expect(gw.live!.rooms.has("property:p1")).toBe(false);
  expect(rt.listenerCount()).toBe(0);
});

it("useWalletBalance shows the latest balance", async () => {
  const { result } = renderHook(() => useWalletBalance(), { wrapper });
  await flush();
  expect(result.current).toBeNull();
  act(() => void gw.publish("user:u1", "wallet:balance_updated", balanceEvent(42)));
  await flush();
  expect(result.current?.usdc).toBe(42);
});

it("bindQueryClient writes whole states and invalidates the rest, and on resync", async () => {
  const queryClient = new QueryClient();
  const invalidated: unknown[] = [];
  const invalidate = queryClient.invalidateQueries.bind(queryClient);
  queryClient.invalidateQueries = (filters) => {
    invalidated.push(filters?.queryKey);
    return invalidate(filters);
  };
  const unbind = bindQueryClient(rt, queryClient);
  await rt.connect();
  gw.publish("user:u1", "wallet:balance_updated", balanceEvent(7));
  gw.publish("user:u1", "reward:distributed", { userId: "u1" });
  gw.live!.serverEmit({ event: "stream:resync_required", payload: { stream: "property:p9", reason: "retention_exceeded" } });
  await flush();
  expect(queryClient.getQueryData(queryKeys.walletBalance)).toMatchObject({ usdc: 7 });
  expect(invalidated).toEqual([queryKeys.rewards, queryKeys.property("p9")]);
  unbind();
  expect(rt.listenerCount()).toBe(0);
});
