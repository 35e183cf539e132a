/** Whether the app is in the foreground (React Native: `appStateLifecycle(AppState)`). */
export interface LifecycleAdapter {
  isActive(): boolean;
  /** Calls `listener` on every change; returns the unsubscribe. */
  subscribe(listener: (active: boolean) => void): () => void;
}

/** Whether the device has a network (React Native: `netInfoNetwork(NetInfo)`). */
export interface NetworkAdapter {
  isOnline(): boolean;
  subscribe(listener: (online: boolean) => void): () => void;
}
