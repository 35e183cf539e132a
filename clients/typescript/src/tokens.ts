import { RealtimeError } from "./errors.js";

export type GetToken = (options: { forceRefresh: boolean }) => string | Promise<string>;

/** `getToken` called single-flight: concurrent callers share one call. */
export class TokenSource {
  private pending: Promise<string> | null = null;

  constructor(private readonly getToken: GetToken) {}

  get(forceRefresh: boolean): Promise<string> {
    this.pending ??= (async () => {
      try {
        return await this.getToken({ forceRefresh });
      } catch (error) {
        throw new RealtimeError("token_unavailable", String(error), { cause: error });
      } finally {
        this.pending = null;
      }
    })();
    return this.pending;
  }
}
