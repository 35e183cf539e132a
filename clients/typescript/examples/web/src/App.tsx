// The design's wallet and property screens (its section 5.4 and 5.5) on @blocks-rt/client: a connection
// indicator, the balance with one toast per change, and a property's funding bar.
import type { ConnectionState, WalletBalanceUpdated } from "@blocks-rt/client";
import { queryKeys, useConnectionState, useProperty, useRealtimeEvent } from "@blocks-rt/client/react";
import { useQuery } from "@tanstack/react-query";
import { useState } from "react";
import { formatTokens, formatUsdc, signed } from "./format";
import { fetchFunding, fetchWallet } from "./session";

const STATE_LABELS: Record<ConnectionState, string> = {
  idle: "Not connected",
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  unauthorized: "Signed out",
  closed: "Closed",
};

const CHANGE_LABELS: Record<WalletBalanceUpdated["change"]["type"], string> = {
  deposit: "Deposit",
  withdrawal: "Withdrawal",
  reward: "Reward",
  investment: "Investment",
};

function ConnectionIndicator() {
  const state = useConnectionState();
  return (
    <span className="indicator" role="status" data-state={state}>
      {STATE_LABELS[state]}
    </span>
  );
}

function WalletScreen() {
  const { data: balance } = useQuery({ queryKey: queryKeys.walletBalance, queryFn: fetchWallet });
  return (
    <section aria-label="Wallet">
      <h2>Wallet</h2>
      <div className="balance">
        {balance ? formatUsdc(balance.usdc) : "…"} <small>USDC</small>
      </div>
      {balance && (
        <dl>
          <dt>Locked</dt>
          <dd>{formatUsdc(balance.locked)} USDC</dd>
          <dt>Total value</dt>
          <dd>{formatUsdc(balance.totalValue)} USDC</dd>
        </dl>
      )}
    </section>
  );
}

function PropertyScreen({ propertyId }: { propertyId: string }) {
  // useProperty keeps the subscription (made again after every reconnect); the bar itself is the query that
  // bindQueryClient writes the ack's snapshot and each live `property:funding_updated` into.
  const { status, error } = useProperty(propertyId);
  const { data: funding } = useQuery({ queryKey: queryKeys.propertyFunding(propertyId), queryFn: fetchFunding });
  const progress = funding?.fundingProgress ?? 0;
  return (
    <section aria-label="Property">
      <h2>Property funding</h2>
      <div className="property-title">{funding?.title ?? propertyId}</div>
      <div className="bar" role="progressbar" aria-valuemin={0} aria-valuemax={100}
           aria-valuenow={funding ? progress : undefined} aria-label="Funding">
        <div style={{ width: `${Math.min(progress, 100)}%` }} />
      </div>
      {funding && (
        <div className="progress">
          <strong>{progress}%</strong> funded · {formatTokens(funding.soldTokens)} of{" "}
          {formatTokens(funding.totalTokens)} tokens sold · {formatTokens(funding.availableTokens)} left
        </div>
      )}
      {status === "error" && <div className="notice">Could not watch this property: {error?.message}</div>}
    </section>
  );
}

interface Toast {
  eventId: string;
  change: WalletBalanceUpdated["change"];
}

/** One toast per balance change: the client hands each event to this handler once, across reconnects and reloads. */
function BalanceToasts() {
  const [toasts, setToasts] = useState<Toast[]>([]);
  useRealtimeEvent("wallet:balance_updated", (event) =>
    setToasts((shown) => [{ eventId: event.eventId, change: event.change }, ...shown]),
  );
  const dismiss = (eventId: string) => setToasts((shown) => shown.filter((t) => t.eventId !== eventId));
  return (
    <ul className="toasts" aria-label="Balance changes">
      {toasts.map(({ eventId, change }) => (
        <li key={eventId} className="toast" data-event-id={eventId} data-direction={change.amount < 0 ? "out" : "in"}
            title="Dismiss" onClick={() => dismiss(eventId)}>
          {CHANGE_LABELS[change.type]} {signed(change.amount)} USDC
        </li>
      ))}
    </ul>
  );
}

export function App({ userId, propertyId }: { userId: string; propertyId: string }) {
  return (
    <>
      <header>
        <div>
          <h1>
            Blocks <span className="user">{userId}</span>
          </h1>
        </div>
        <ConnectionIndicator />
      </header>
      <main>
        <WalletScreen />
        <PropertyScreen propertyId={propertyId} />
      </main>
      <BalanceToasts />
    </>
  );
}
