/** Full-jitter exponential backoff: attempt n waits a uniform time in [0, min(maxMs, minMs * 2^n)]. */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly minMs: number,
    private readonly maxMs: number,
    private readonly random: () => number,
  ) {}

  next(): number {
    const cap = Math.min(this.maxMs, this.minMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    return Math.round(this.random() * cap);
  }

  reset(): void {
    this.attempt = 0;
  }
}
