/**
 * Virtual time: a priority queue of events ordered by (time, insertion), and
 * the coordinator's Timers on top of it. Nothing waits on a real clock, so a
 * run of minutes of virtual time takes milliseconds, and the order of events
 * depends only on the seed.
 */
import type { Coordinator } from '@guts-upgrade/coordinator';

/** The coordinator's timer interface (engine/effects.ts), as its constructor takes it. */
export type Timers = NonNullable<ConstructorParameters<typeof Coordinator>[4]>;
export type Cancel = () => void;

interface Ev {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

export class Scheduler {
  now = 0;
  private heap: Ev[] = [];
  private seq = 0;
  events = 0;
  /** An event threw: the simulation decides (a planned crash, or a violation). */
  onError: (err: unknown) => void = (err) => {
    throw err;
  };

  at(at: number, fn: () => void): Cancel {
    const ev: Ev = { at: Math.max(at, this.now), seq: this.seq++, fn, cancelled: false };
    this.push(ev);
    return () => {
      ev.cancelled = true;
    };
  }

  after(ms: number, fn: () => void): Cancel {
    return this.at(this.now + ms, fn);
  }

  get size(): number {
    return this.heap.length;
  }

  /** Runs the next event; false when none is left or the next is after `until`. */
  step(until: number): boolean {
    for (;;) {
      const ev = this.heap[0];
      if (!ev || ev.at > until) return false;
      this.pop();
      if (ev.cancelled) continue;
      this.now = ev.at;
      this.events++;
      try {
        ev.fn();
      } catch (err) {
        this.onError(err);
      }
      return true;
    }
  }

  /**
   * Timers for one life of the coordinator: when it "dies" (kill -9), every
   * timer it set dies with it.
   */
  timers(alive: () => boolean): Timers {
    return {
      every: (ms, fn) => {
        let cancel: Cancel = () => {};
        let stopped = false;
        const arm = () => {
          cancel = this.after(ms, () => {
            if (stopped || !alive()) return;
            arm();
            fn();
          });
        };
        arm();
        return () => {
          stopped = true;
          cancel();
        };
      },
      after: (ms, fn) => this.after(ms, () => alive() && fn()),
      soon: (fn) => {
        this.after(0, () => alive() && fn());
      },
    };
  }

  private push(ev: Ev): void {
    const h = this.heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!less(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop()!;
    if (h.length === 0) return;
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && less(h[l]!, h[m]!)) m = l;
      if (r < h.length && less(h[r]!, h[m]!)) m = r;
      if (m === i) break;
      [h[i], h[m]] = [h[m]!, h[i]!];
      i = m;
    }
  }
}

function less(a: Ev, b: Ev): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}
