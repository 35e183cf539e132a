// The browser's own idea of the network (navigator.onLine and its events) as the client's network adapter:
// offline, the state is `offline` and no attempt is made; back online, it reconnects at once and resumes.
import type { NetworkAdapter } from "@blocks-rt/client";

export const browserNetwork: NetworkAdapter = {
  isOnline: () => navigator.onLine,
  subscribe(listener) {
    const online = () => listener(true);
    const offline = () => listener(false);
    window.addEventListener("online", online);
    window.addEventListener("offline", offline);
    return () => {
      window.removeEventListener("online", online);
      window.removeEventListener("offline", offline);
    };
  },
};
