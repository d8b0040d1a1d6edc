/**
 * Maintenance windows: a node-cron expression marks when a window opens, a
 * duration how long it stays open. Evaluated in UTC so that the answer does not
 * depend on the host's timezone.
 */
import { parse, validateDetailed } from 'node-cron';
import { CodedError } from '@guts-upgrade/protocol';

export interface WindowSpec {
  name: string;
  cron: string;
  durationMs: number;
}

interface Fields {
  second: Set<number>;
  minute: Set<number>;
  hour: Set<number>;
  dom: Set<number>;
  month: Set<number>;
  dow: Set<number>;
  domAll: boolean;
  dowAll: boolean;
}

const cache = new Map<string, Fields>();

function fields(cron: string): Fields {
  let f = cache.get(cron);
  if (f) return f;
  const v = validateDetailed(cron);
  if (!v.valid) {
    throw new CodedError('E_CONFIG', `invalid cron "${cron}": ${v.errors.map((e) => e.message).join('; ')}`);
  }
  const p = parse(cron);
  const num = (a: (number | string)[]) => new Set(a.map((x) => Number(x)));
  const dow = num(p.dayOfWeek);
  if (dow.has(7)) dow.add(0);
  f = {
    second: new Set(p.second),
    minute: new Set(p.minute),
    hour: new Set(p.hour),
    dom: num(p.dayOfMonth),
    month: new Set(p.month),
    dow,
    domAll: p.dayOfMonth.length >= 31,
    dowAll: dow.size >= 7,
  };
  cache.set(cron, f);
  return f;
}

function dayMatches(f: Fields, d: Date): boolean {
  const domOk = f.dom.has(d.getUTCDate());
  const dowOk = f.dow.has(d.getUTCDay());
  // classic cron: when both day fields are restricted, either may match
  if (!f.domAll && !f.dowAll) return domOk || dowOk;
  return domOk && dowOk;
}

function minuteMatches(f: Fields, d: Date): boolean {
  return f.month.has(d.getUTCMonth() + 1) && dayMatches(f, d) && f.hour.has(d.getUTCHours()) && f.minute.has(d.getUTCMinutes());
}

/** The start of the window occurrence containing `now`, or null when closed. */
export function openOccurrence(w: WindowSpec, now: number): { start: number; end: number } | null {
  const f = fields(w.cron);
  const seconds = [...f.second].sort((a, b) => b - a);
  const minuteStart = Math.floor(now / 60_000) * 60_000;
  const maxMinutes = Math.ceil(w.durationMs / 60_000) + 1;
  for (let i = 0; i <= maxMinutes; i++) {
    const m = minuteStart - i * 60_000;
    if (!minuteMatches(f, new Date(m))) continue;
    // latest matching second in this minute that is not in the future
    for (const s of seconds) {
      const start = m + s * 1000;
      if (start > now) continue;
      if (now < start + w.durationMs) return { start, end: start + w.durationMs };
      break;
    }
  }
  return null;
}

export function isOpen(w: WindowSpec, now: number): boolean {
  return openOccurrence(w, now) !== null;
}

/** The next time the window opens after `now` (searching up to 400 days), or null. */
export function nextOpening(w: WindowSpec, now: number): number | null {
  const f = fields(w.cron);
  const seconds = [...f.second].sort((a, b) => a - b);
  let m = Math.floor(now / 60_000) * 60_000;
  const limit = now + 400 * 86_400_000;
  while (m < limit) {
    const d = new Date(m);
    if (!f.month.has(d.getUTCMonth() + 1) || !dayMatches(f, d)) {
      m = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1);
      continue;
    }
    if (!f.hour.has(d.getUTCHours())) {
      m = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate(), d.getUTCHours() + 1);
      continue;
    }
    if (f.minute.has(d.getUTCMinutes())) {
      for (const s of seconds) if (m + s * 1000 > now) return m + s * 1000;
    }
    m += 60_000;
  }
  return null;
}

/** Whether a rollout may run now as far as its window goes: no window, or its named window is open. */
export function windowAllows(windowName: string | null, windows: readonly WindowSpec[], now: number): boolean {
  if (!windowName) return true;
  const w = windows.find((x) => x.name === windowName);
  return !!w && isOpen(w, now);
}
