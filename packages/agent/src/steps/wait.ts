/**
 * Waiting for a condition until a deadline: a node that restarts goes through
 * phases (storage, readiness, the engine starting, connections forming), so a
 * post-start check polls, backing off, and fails only when its deadline has
 * passed, saying how long it waited and what it saw last.
 */

export interface PollOptions<T> {
  /** Reads the current value (never throws: an unreachable node is a value). */
  read: () => Promise<T>;
  /** The condition the check waits for. */
  done: (v: T) => boolean;
  timeoutMs: number;
  /** Stop waiting early, for a reason of the caller's (checked after every read). */
  giveUp?: (v: T) => boolean;
  /** Cuts a pause short so giveUp is looked at again at once. */
  wake?: AbortSignal;
  /** Called after a read that did not end the wait. */
  onPoll?: (v: T, waitedMs: number) => void;
  initialMs?: number;
  maxMs?: number;
  factor?: number;
}

export interface PollResult<T> {
  /** The condition held. */
  ok: boolean;
  /** giveUp ended the wait before the deadline. */
  gaveUp: boolean;
  value: T;
  waitedMs: number;
  polls: number;
}

/** The next pause: multiplied by factor from initialMs, at most maxMs, never past the deadline. */
export function nextDelay(prev: number | null, o: { initialMs: number; maxMs: number; factor: number }, leftMs: number): number {
  const d = prev === null ? o.initialMs : Math.min(o.maxMs, prev * o.factor);
  return Math.max(0, Math.min(d, leftMs));
}

/** Sleeps ms; an abort of wake during the sleep ends it early (one already aborted was seen by the last giveUp). */
function pause(ms: number, wake?: AbortSignal): Promise<void> {
  if (ms <= 0) return Promise.resolve();
  if (!wake || wake.aborted) return new Promise((r) => setTimeout(r, ms));
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      wake?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    wake?.addEventListener('abort', done, { once: true });
  });
}

/** Reads until done(value), giveUp(value) or the deadline; the last read happens at the deadline. */
export async function pollUntil<T>(o: PollOptions<T>): Promise<PollResult<T>> {
  const backoff = { initialMs: o.initialMs ?? 100, maxMs: o.maxMs ?? 2000, factor: o.factor ?? 1.5 };
  const t0 = Date.now();
  let delay: number | null = null;
  let polls = 0;
  for (;;) {
    const value = await o.read();
    polls++;
    const waitedMs = Date.now() - t0;
    if (o.done(value)) return { ok: true, gaveUp: false, value, waitedMs, polls };
    if (o.giveUp?.(value)) return { ok: false, gaveUp: true, value, waitedMs, polls };
    if (waitedMs >= o.timeoutMs) return { ok: false, gaveUp: false, value, waitedMs, polls };
    o.onPoll?.(value, waitedMs);
    delay = nextDelay(delay, backoff, o.timeoutMs - waitedMs);
    await pause(delay, o.wake);
  }
}
