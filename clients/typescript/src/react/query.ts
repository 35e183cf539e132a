import type { BlocksRealtime } from "../client.js";

/** What the bridge needs of @tanstack/react-query's QueryClient (no runtime import of it). */
export interface QueryClientLike {
  setQueryData(queryKey: readonly unknown[], data: unknown): unknown;
  invalidateQueries(filters: { queryKey: readonly unknown[] }): unknown;
}

/** The query keys the bridge writes or invalidates; the defaults live under `["blocks", ...]`. */
export const queryKeys = {
  all: ["blocks"] as const,
  walletBalance: ["blocks", "wallet", "balance"] as const,
  portfolio: ["blocks", "portfolio"] as const,
  investments: ["blocks", "investments"] as const,
  transactions: ["blocks", "transactions"] as const,
  rewards: ["blocks", "rewards"] as const,
  notifications: ["blocks", "notifications"] as const,
  property: (propertyId: string) => ["blocks", "property", propertyId] as const,
  propertyFunding: (propertyId: string) => ["blocks", "property", propertyId, "funding"] as const,
};

/**
 * Keep React Query's cache in step with the stream: events that carry a whole state (balance, portfolio,
 * funding) are written with `setQueryData`; the others invalidate their lists; `resync` invalidates what its
 * stream covers. Returns the unbind.
 */
export function bindQueryClient(rt: BlocksRealtime, queryClient: QueryClientLike): () => void {
  const invalidate = (queryKey: readonly unknown[]) => void queryClient.invalidateQueries({ queryKey });
  const offs = [
    rt.on("wallet:balance_updated", (e) => void queryClient.setQueryData(queryKeys.walletBalance, e.balance)),
    rt.on("portfolio:updated", (e) => void queryClient.setQueryData(queryKeys.portfolio, e.portfolio)),
    rt.on("property:funding_updated", (e) =>
      void queryClient.setQueryData(queryKeys.propertyFunding(e.propertyId), e.property)),
    rt.on("property:snapshot", (e) => {
      if (e.funding !== null) queryClient.setQueryData(queryKeys.propertyFunding(e.propertyId), e.funding);
    }),
    rt.on("property:status_changed", (e) => invalidate(queryKeys.property(e.propertyId))),
    rt.on("investment:created", () => invalidate(queryKeys.investments)),
    rt.on("investment:confirmed", () => invalidate(queryKeys.investments)),
    rt.on("transaction:status_changed", () => invalidate(queryKeys.transactions)),
    rt.on("reward:distributed", () => invalidate(queryKeys.rewards)),
    rt.on("notification:new", () => invalidate(queryKeys.notifications)),
    rt.on("resync", ({ stream }) => {
      const [kind, id] = stream.split(":");
      invalidate(kind === "property" && id ? queryKeys.property(id) : queryKeys.all);
    }),
  ];
  return () => offs.forEach((off) => off());
}
