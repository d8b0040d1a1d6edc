/**
 * Webhook delivery from a SQLite outbox: an event is enqueued in the same
 * transaction that records it, so a crash never loses a notification, and a
 * failed POST is retried with exponential backoff. Each body is signed with
 * HMAC-SHA256 of the raw bytes under the hook's secret.
 */
import { createHmac } from 'node:crypto';
import type { Logger } from 'pino';
import type { Store } from './db.js';
import type { WebhookConfig } from './config.js';

export const SIGNATURE_HEADER = 'x-guts-upgrade-signature';
export const EVENT_HEADER = 'x-guts-upgrade-event';
export const DELIVERY_HEADER = 'x-guts-upgrade-delivery';

/** Event types that are sent to webhooks (the audit log records more). */
export const WEBHOOK_EVENTS = [
  'rollout.started',
  'node.upgraded',
  'node.failed',
  'node.rolled_back',
  'node.agent_lost',
  'node.agent_back',
  'rollout.paused',
  'rollout.resumed',
  'rollout.completed',
  'rollout.failed',
  'rollout.aborted',
  'rollout.rolling_back',
  'rollout.rolled_back',
  'canary.passed',
  'halt.started',
] as const;

export function signBody(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body, 'utf8').digest('hex')}`;
}

export class WebhookSender {
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  delivered = 0;
  failedAttempts = 0;

  constructor(
    private readonly store: Store,
    private readonly hooks: WebhookConfig[],
    private readonly retry: { maxAttempts: number; baseDelayMs: number; timeoutMs: number },
    private readonly log: Logger,
    private readonly onOutcome: (outcome: 'delivered' | 'retry' | 'dead') => void = () => {},
  ) {}

  /** Called inside the event's transaction. */
  enqueue(seq: number, type: string, payload: Record<string, unknown>, now: number): void {
    if (!(WEBHOOK_EVENTS as readonly string[]).includes(type)) return;
    for (const h of this.hooks) {
      if (h.events && !h.events.includes(type)) continue;
      this.store.enqueueWebhook(h.url, seq, type, JSON.stringify(payload), now);
    }
  }

  start(intervalMs = 200): void {
    if (this.hooks.length === 0) return;
    this.timer = setInterval(() => void this.flush(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  async flush(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      for (const d of this.store.dueWebhooks(Date.now())) {
        const hook = this.hooks.find((h) => h.url === d.url);
        if (!hook) {
          this.store.markWebhook(d.id, 'dead', d.attempts, 0, 'hook no longer configured', Date.now());
          continue;
        }
        const attempts = d.attempts + 1;
        let error: string | null = null;
        try {
          const res = await fetch(d.url, {
            method: 'POST',
            headers: {
              'content-type': 'application/json',
              [SIGNATURE_HEADER]: signBody(hook.secret, d.body),
              [EVENT_HEADER]: d.eventType,
              [DELIVERY_HEADER]: String(d.id),
            },
            body: d.body,
            signal: AbortSignal.timeout(this.retry.timeoutMs),
          });
          await res.arrayBuffer().catch(() => undefined);
          if (res.status < 200 || res.status >= 300) error = `HTTP ${res.status}`;
        } catch (err) {
          error = (err as Error).message;
        }
        const now = Date.now();
        if (!error) {
          this.delivered++;
          this.store.markWebhook(d.id, 'delivered', attempts, now, null, now);
          this.onOutcome('delivered');
        } else if (attempts >= this.retry.maxAttempts) {
          this.failedAttempts++;
          this.store.markWebhook(d.id, 'dead', attempts, now, error, now);
          this.log.warn({ url: d.url, attempts, error }, 'webhook given up');
          this.onOutcome('dead');
        } else {
          this.failedAttempts++;
          const delay = this.retry.baseDelayMs * 2 ** (attempts - 1);
          this.store.markWebhook(d.id, 'pending', attempts, now + delay, error, now);
          this.onOutcome('retry');
        }
      }
    } catch (err) {
      this.log.error({ err }, 'webhook flush failed');
    } finally {
      this.running = false;
    }
  }
}
