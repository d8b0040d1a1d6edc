/**
 * The audit log: every event is appended to SQLite and, when a webhook wants
 * it, put in the webhook outbox in the same transaction (so a crash never
 * loses a notification). Callers run record() inside their transaction;
 * operators read the log back through events().
 */
import type { EventRow, Store } from '../db.js';
import type { WebhookSender } from '../webhooks.js';

export class Audit {
  constructor(
    private readonly store: Store,
    private readonly webhooks: Pick<WebhookSender, 'enqueue'>,
    private readonly now: () => number,
  ) {}

  record(type: string, actor: string, rolloutId: string | null, nodeId: string | null, data: Record<string, unknown> = {}): void {
    const now = this.now();
    const seq = this.store.appendEvent({ at: now, actor, type, rolloutId, nodeId, data });
    this.webhooks.enqueue(seq, type, { seq, type, at: new Date(now).toISOString(), actor, rolloutId, nodeId, data }, now);
  }

  /** The whole log after a sequence number, oldest first. */
  events(after = 0): EventRow[] {
    return this.store.events({ after });
  }
}
