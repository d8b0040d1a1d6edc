/**
 * One syntax for durations and one for schedules, for both daemons' configuration
 * (and the CLI), checked when a file is loaded.
 *
 * A duration is a whole number of milliseconds (a number, or a string of digits), or
 * a string with units: "1500ms", "30s", "2m", "4h", "1d", or several of them in
 * decreasing order, "1h30m". A schedule is a node-cron expression (five fields, or six
 * with seconds first), evaluated in UTC by both daemons.
 */
import { validate as cronValid, validateDetailed } from 'node-cron';

const UNIT_MS = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1000, ms: 1 } as const;
type Unit = keyof typeof UNIT_MS;
const ORDER: Unit[] = ['d', 'h', 'm', 's', 'ms'];

/** Milliseconds, or null when the input is not a duration in the syntax above. */
export function parseDurationMs(input: unknown): number | null {
  if (typeof input === 'number') return Number.isInteger(input) && input >= 0 ? input : null;
  if (typeof input !== 'string') return null;
  const s = input.trim();
  if (/^\d+$/.test(s)) return Number(s);
  const parts = [...s.matchAll(/(\d+)(ms|d|h|m|s)/gy)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== s) return null;
  let total = 0;
  let last = -1;
  for (const p of parts) {
    const i = ORDER.indexOf(p[2] as Unit);
    if (i <= last) return null; // "30s1h" or "1h1h": not a duration a person meant
    last = i;
    total += Number(p[1]) * UNIT_MS[p[2] as Unit];
  }
  return Number.isSafeInteger(total) ? total : null;
}

/** What is wrong with a duration, for an E_CONFIG message, or null when it is one. */
export function durationProblem(input: unknown): string | null {
  return parseDurationMs(input) === null ? `must be milliseconds or a duration like "30s", "2m", "4h" or "1h30m", got ${JSON.stringify(input)}` : null;
}

/** What is wrong with a cron expression, or null when node-cron takes it. */
export function cronProblem(expr: unknown): string | null {
  if (typeof expr !== 'string' || expr.trim() === '') return `must be a cron expression like "0 2 * * 0", got ${JSON.stringify(expr)}`;
  if (cronValid(expr)) return null;
  const v = validateDetailed(expr);
  return `invalid cron expression ${JSON.stringify(expr)}: ${v.errors.map((e) => `${e.field}: ${e.message}`).join('; ') || 'not valid'}`;
}
