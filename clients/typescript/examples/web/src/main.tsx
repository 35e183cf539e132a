// The page's start: ask the gateway that served it where it is and for a token, read the wallet over REST,
// then go live. Offsets live in localStorage, so a reload (or a tab opened later) resumes where this one stopped.
import { BlocksRealtime, webStorage } from "@blocks-rt/client";
import { RealtimeProvider, bindQueryClient, queryKeys } from "@blocks-rt/client/react";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { browserNetwork } from "./network";
import { fetchFunding, fetchSession, fetchWallet } from "./session";
import "./app.css";

async function main(): Promise<void> {
  const session = await fetchSession();
  const rt = new BlocksRealtime({
    url: session.url,
    getToken: async () => (await fetchSession()).token, // a fresh one at each connect and on `auth:expired`
    storage: webStorage(window.localStorage),
    storageKey: `blocks-rt:${session.userId}`,
    network: browserNetwork,
  });
  // The stream keeps these queries fresh: no refetch on focus or age, only on `resync` (bindQueryClient).
  const queryClient = new QueryClient({
    defaultOptions: { queries: { staleTime: Infinity, refetchOnWindowFocus: false } },
  });
  bindQueryClient(rt, queryClient);
  // Read before going live, so an older REST answer can never land on top of a newer event.
  await Promise.all([
    queryClient.prefetchQuery({ queryKey: queryKeys.walletBalance, queryFn: fetchWallet }),
    queryClient.prefetchQuery({ queryKey: queryKeys.propertyFunding(session.propertyId), queryFn: fetchFunding }),
  ]);
  createRoot(document.getElementById("root")!).render(
    <StrictMode>
      <QueryClientProvider client={queryClient}>
        <RealtimeProvider client={rt}>
          <App userId={session.userId} propertyId={session.propertyId} />
        </RealtimeProvider>
      </QueryClientProvider>
    </StrictMode>,
  );
}

void main();
