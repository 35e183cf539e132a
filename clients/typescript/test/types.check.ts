// Type tests, checked by `tsc --noEmit` (npm run typecheck): each `@ts-expect-error` must be an error, so misuse
// that started to compile would fail the check. Never run, only compiled.
import { QueryClient } from "@tanstack/react-query";
import { expectTypeOf } from "vitest";
import { BlocksRealtime, type ConnectionState, memoryStorage, RealtimeError, type RealtimeErrorCode,
         type SubscribeAck, type WalletBalanceUpdated } from "../src/index.js";
import { bindQueryClient, useProperty, useRealtimeEvent } from "../src/react/index.js";
import { appStateLifecycle, netInfoNetwork } from "../src/react-native/index.js";

export function core(rt: BlocksRealtime): void {
  rt.on("wallet:balance_updated", (event) => {
    expectTypeOf(event).toEqualTypeOf<WalletBalanceUpdated>();
    expectTypeOf(event.balance.usdc).toEqualTypeOf<number>();
    expectTypeOf(event.eventId).toEqualTypeOf<string>();
  });
  rt.on("resync", ({ stream, reason }) => {
    expectTypeOf(stream).toEqualTypeOf<string>();
    expectTypeOf(reason).toEqualTypeOf<"epoch_changed" | "retention_exceeded" | "invalid_offset">();
  });
  rt.on("investment:created", async (event) => {
    expectTypeOf(event.investment.status).toEqualTypeOf<"pending" | "confirmed">();
  });
  expectTypeOf(rt.on("connected", () => undefined)).toEqualTypeOf<() => void>();
  expectTypeOf(rt.state).toEqualTypeOf<ConnectionState>();
  expectTypeOf(rt.connect()).toEqualTypeOf<Promise<void>>();
  expectTypeOf(rt.subscribeToProperty("prop_palm")).toEqualTypeOf<Promise<SubscribeAck>>();
  expectTypeOf<RealtimeError["code"]>().toEqualTypeOf<RealtimeErrorCode>();

  // @ts-expect-error: no such event
  rt.on("wallet:balance_update", () => undefined);
  // @ts-expect-error: a payload field of the wrong type
  rt.on("wallet:balance_updated", (event: { balance: { usdc: string } }) => undefined);
  // @ts-expect-error: a field the payload does not have
  rt.on("portfolio:updated", (event) => event.balance);
  // @ts-expect-error: property ids are strings
  void rt.subscribeToProperty(42);
  // @ts-expect-error: getToken is required
  void new BlocksRealtime({ url: "http://localhost:3000", storage: memoryStorage() });
  // @ts-expect-error: no such state
  const state: ConnectionState = "connected";
  void state;
}

export function react(rt: BlocksRealtime): void {
  useRealtimeEvent("reward:distributed", (event) => {
    expectTypeOf(event.reward.amount).toEqualTypeOf<number>();
  });
  // @ts-expect-error: no such event
  useRealtimeEvent("reward:distribute", () => undefined);
  expectTypeOf(useProperty("prop_palm").funding?.fundingProgress).toEqualTypeOf<number | undefined>();
  bindQueryClient(rt, new QueryClient()); // the real QueryClient fits the bridge's structural type
}

export function reactNative(): void {
  const appState = { currentState: "active", addEventListener: () => ({ remove: () => undefined }) };
  appStateLifecycle(appState);
  netInfoNetwork({ addEventListener: () => () => undefined });
  // @ts-expect-error: NetInfo's listener returns its unsubscribe, not a subscription object
  netInfoNetwork({ addEventListener: () => ({ remove: () => undefined }) });
}
