// What the page learns from the gateway that served it (never hard-coded: see blocks_rt/web_demo.py).
import type { Balance, FundingState } from "@blocks-rt/client";

export interface Session {
  url: string;
  userId: string;
  propertyId: string;
  token: string;
}

async function getJson<T>(path: string): Promise<T> {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return (await response.json()) as T;
}

export const fetchSession = (): Promise<Session> => getJson<Session>("session");

/** The REST read an app makes before it goes live, and again when the client raises `resync`. */
export const fetchWallet = (): Promise<Balance> => getJson<Balance>("wallet");

/** The property's funding bar over REST: a subscribe ack carries none before the property's first funding event. */
export const fetchFunding = (): Promise<FundingState> => getJson<FundingState>("property");
