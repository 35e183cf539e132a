// Adapters from React Native's AppState and @react-native-community/netinfo to the client's lifecycle and
// network interfaces. Both are passed in, so this entry imports neither and builds without them:
//
//   import { AppState } from "react-native";
//   import NetInfo from "@react-native-community/netinfo";
//   new BlocksRealtime({ ..., lifecycle: appStateLifecycle(AppState), network: netInfoNetwork(NetInfo) });
import type { LifecycleAdapter, NetworkAdapter } from "../adapters.js";

/** React Native's `AppState`, as far as the adapter uses it. */
export interface AppStateLike {
  currentState: string | null | undefined;
  addEventListener(type: "change", listener: (state: string) => void): { remove(): void };
}

/** What NetInfo reports, as far as the adapter uses it. */
export interface NetInfoStateLike {
  isConnected: boolean | null;
  isInternetReachable?: boolean | null;
}

/** `@react-native-community/netinfo`'s default export, as far as the adapter uses it. */
export interface NetInfoLike {
  addEventListener(listener: (state: NetInfoStateLike) => void): () => void;
}

/** Foreground is `active`; `background` and `inactive` (iOS app switcher) start the background grace. */
export function appStateLifecycle(appState: AppStateLike): LifecycleAdapter {
  return {
    isActive: () => appState.currentState === "active" || appState.currentState == null,
    subscribe: (listener) => {
      const subscription = appState.addEventListener("change", (state) => listener(state === "active"));
      return () => subscription.remove();
    },
  };
}

/** Offline only when NetInfo says so (`isConnected` or `isInternetReachable` false); unknown counts as online. */
export function netInfoNetwork(netInfo: NetInfoLike): NetworkAdapter {
  let online = true;
  return {
    isOnline: () => online,
    subscribe: (listener) =>
      netInfo.addEventListener((state) => {
        const now = state.isConnected !== false && state.isInternetReachable !== false;
        if (now !== online) {
          online = now;
          listener(now);
        }
      }),
  };
}
