/**
 * Refused agent handshakes, summarised. A refused handshake comes from someone
 * who has not proven who they are, so it writes no database row and nothing it
 * sent (its node-id header can be any size) is kept or logged: it is counted
 * (the handshakes_refused metric, by reason) and the log gets at most one line
 * per interval, the first refusal at once and then the counts of the rest.
 * Only the ids of registered nodes are named (an agent with a stale token is
 * the common, harmless case an operator wants to see).
 */
import type { Logger } from 'pino';
import type { Cancel, Timers } from './effects.js';

/** Why a handshake was refused: bounded, so it can be a metric label. */
export const REFUSAL_REASONS = ['no_credentials', 'unknown_node', 'revoked', 'bad_token'] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/** How many registered nodes one summary line names at most. */
const MAX_NAMED = 20;

export class RefusalLog {
  private counts = new Map<RefusalReason, number>();
  private named = new Set<string>();
  private quietUntil = 0;
  private flush: Cancel | null = null;

  constructor(private readonly d: { log: Logger; timers: Timers; now: () => number; intervalMs: number }) {}

  /** Notes one refusal; `nodeId` only when it names a registered node. */
  record(reason: RefusalReason, nodeId: string | null): void {
    const now = this.d.now();
    if (now >= this.quietUntil && !this.flush) {
      this.quietUntil = now + this.d.intervalMs;
      this.d.log.warn(
        { code: 'E_AUTH', reason, ...(nodeId ? { nodeId } : {}) },
        `agent handshake refused (${reason}); further refusals are summarised at most once every ${Math.round(this.d.intervalMs / 1000)} s`,
      );
      return;
    }
    this.counts.set(reason, (this.counts.get(reason) ?? 0) + 1);
    if (nodeId && this.named.size < MAX_NAMED) this.named.add(nodeId);
    this.flush ??= this.d.timers.after(Math.max(0, this.quietUntil - now), () => {
      this.flush = null;
      this.summarise();
    });
  }

  /** Logs what was counted and not yet logged (also on stop, so no count is lost from the log). */
  summarise(): void {
    this.flush?.();
    this.flush = null;
    if (this.counts.size === 0) return;
    const byReason = Object.fromEntries(this.counts);
    const total = [...this.counts.values()].reduce((a, b) => a + b, 0);
    this.d.log.warn(
      { code: 'E_AUTH', refused: byReason, ...(this.named.size ? { nodes: [...this.named] } : {}) },
      `${total} more agent handshakes refused (bad or missing credentials)`,
    );
    this.counts.clear();
    this.named.clear();
    this.quietUntil = this.d.now() + this.d.intervalMs;
  }
}
