/** Where offsets live between runs: AsyncStorage's shape (React Native), or `webStorage(localStorage)`. */
export interface RealtimeStorage {
  getItem(key: string): Promise<string | null>;
  setItem(key: string, value: string): Promise<void>;
  removeItem(key: string): Promise<void>;
}

/** A storage that lasts as long as the process (tests, or an app that does not resume across restarts). */
export function memoryStorage(): RealtimeStorage {
  const items = new Map<string, string>();
  return {
    getItem: async (key) => items.get(key) ?? null,
    setItem: async (key, value) => void items.set(key, value),
    removeItem: async (key) => void items.delete(key),
  };
}

interface SyncStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** `localStorage` / `sessionStorage` behind the async interface. */
export function webStorage(storage: SyncStorage): RealtimeStorage {
  return {
    getItem: async (key) => storage.getItem(key),
    setItem: async (key, value) => storage.setItem(key, value),
    removeItem: async (key) => storage.removeItem(key),
  };
}
