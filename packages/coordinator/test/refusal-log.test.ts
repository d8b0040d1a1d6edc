/**
 * The refusal log on the Timers seam the simulation uses (a clock and timers run by
 * hand), so "at most one line per interval" is checked without waiting.
 */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import t from 'tap';
import type { Timers } from '../src/engine/effects.js';
import { RefusalLog } from '../src/engine/refusal-log.js';

function handTimers() {
  let now = 0;
  const pending: { at: number; fn: () => void; live: boolean }[] = [];
  const timers: Timers = {
    every: () => () => undefined,
    after(ms, fn) {
      const p = { at: now + ms, fn, live: true };
      pending.push(p);
      return () => {
        p.live = false;
      };
    },
    soon: (fn) => fn(),
  };
  const advance = (ms: number) => {
    now += ms;
    for (const p of pending.splice(0)) {
      if (p.live && p.at <= now) p.fn();
      else if (p.live) pending.push(p);
    }
  };
  return { timers, now: () => now, advance };
}

t.test('the first refusal is logged at once, the rest as one summary per interval', async (t) => {
  const lines: { msg: string; refused?: Record<string, number>; nodes?: string[] }[] = [];
  const log = pino(
    { level: 'info' },
    new Writable({
      write(chunk, _enc, cb) {
        lines.push(JSON.parse(String(chunk)));
        cb();
      },
    }),
  );
  const h = handTimers();
  const r = new RefusalLog({ log, timers: h.timers, now: h.now, intervalMs: 60_000 });
  r.record('unknown_node', null);
  for (let i = 0; i < 500; i++) r.record('unknown_node', null);
  r.record('bad_token', 'v1');
  r.record('bad_token', 'v1');
  await new Promise((res) => setImmediate(res));
  t.equal(lines.length, 1, 'one line for the first refusal');
  h.advance(60_000);
  await new Promise((res) => setImmediate(res));
  t.equal(lines.length, 2, 'then one summary at the end of the interval');
  t.same(lines[1]!.refused, { unknown_node: 500, bad_token: 2 });
  t.same(lines[1]!.nodes, ['v1'], 'registered nodes are named');
  r.record('revoked', 'v2');
  h.advance(30_000);
  r.summarise();
  await new Promise((res) => setImmediate(res));
  t.equal(lines.length, 3, 'a refusal inside the next interval waits for its summary (here: stop)');
  t.same(lines[2]!.refused, { revoked: 1 });
  h.advance(120_000);
  r.record('no_credentials', null);
  await new Promise((res) => setImmediate(res));
  t.equal(lines.length, 4, 'after a quiet interval the next refusal is logged at once');
});
