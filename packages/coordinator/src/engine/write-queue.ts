/**
 * The group-commit write queue. Agent messages are not committed one by one
 * (each commit is an fsync, and a wave of nodes sends its ~20 messages per
 * upgrade at the same instants): they queue here and are committed together by
 * whichever comes first of
 *  - the next tick, which commits them in one transaction BEFORE it reads the
 *    state it decides on, so a result or a rejection is durable before any
 *    command that depends on it is created or sent (urgent writes ask for that
 *    tick right away);
 *  - any other transaction of the coordinator (see tx()), so the database sees
 *    every write in the order the messages arrived;
 *  - a short timer (FLUSH_MS) for the purely informational ones.
 * A kill -9 loses at most the queue: results and rejections come back from the
 * agent (hello.recentResults, and a re-sent command id is answered again), the
 * rest is informational (see agent-hub.ts).
 */
import type { Logger } from 'pino';
import type { Store } from '../db.js';
import type { Cancel, Timers } from './effects.js';

/** How long an informational write (progress, acks, 'sent' marks, node status) may wait to be committed. */
export const FLUSH_MS = 100;

export class WriteQueue {
  private pending: (() => void)[] = [];
  private cancelFlush: Cancel | null = null;
  private stopped = false;

  constructor(
    private readonly store: Store,
    private readonly timers: Timers,
    private readonly log: Logger,
    /** Asks for a tick soon: an urgent write changes a decision. */
    private readonly onUrgent: () => void,
  ) {}

  /** Queues a write for the next transaction; urgent ones (they change a decision) get a tick right away. */
  queue(write: () => void, urgent: boolean): void {
    this.pending.push(write);
    if (urgent) this.onUrgent();
    else if (!this.cancelFlush && !this.stopped) {
      this.cancelFlush = this.timers.after(FLUSH_MS, () => {
        this.cancelFlush = null;
        this.flush();
      });
    }
  }

  /** Writes waiting for a commit. */
  get size(): number {
    return this.pending.length;
  }

  /** Commits the queued writes in one transaction. */
  flush(): void {
    if (this.pending.length === 0) return;
    const list = this.pending;
    try {
      this.store.tx(() => this.writeAll());
    } catch (err) {
      // The commit itself failed: keep the writes for the next attempt.
      this.pending = [...list, ...this.pending];
      this.log.error({ err }, 'committing queued writes failed');
    }
  }

  /** A transaction that first writes everything queued before it, so writes reach the database in arrival order. */
  tx<T>(fn: () => T): T {
    const list = this.pending;
    try {
      return this.store.tx(() => {
        this.writeAll();
        return fn();
      });
    } catch (err) {
      // fn threw and everything was rolled back: the queued writes are not lost, they go with the next transaction.
      this.pending = [...list, ...this.pending];
      throw err;
    }
  }

  /** Stops the flush timer and commits what was queued (a graceful stop keeps it; the store is closed after this). */
  stop(): void {
    this.stopped = true;
    this.cancelFlush?.();
    this.cancelFlush = null;
    this.flush();
  }

  /** Runs the queued writes; only ever called inside a transaction. */
  private writeAll(): void {
    const list = this.pending;
    this.pending = [];
    for (const w of list) {
      try {
        // Nested: a savepoint, so one failing write is undone whole and does not take the others with it.
        this.store.tx(w);
      } catch (err) {
        this.log.error({ err }, 'queued write failed');
      }
    }
  }
}
