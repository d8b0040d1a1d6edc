/**
 * Metadata lifetimes. Short-lived metadata is what defeats a freeze attack
 * (an agent refuses expired metadata), so each role gets the lifetime its key's
 * exposure allows: the online timestamp key re-signs daily, the offline root
 * key yearly.
 */
import { ReleaseError } from './errors.js';
import type { RoleName } from './keys.js';

export const DEFAULT_EXPIRY: Record<RoleName, string> = { root: '1y', targets: '3mo', snapshot: '7d', timestamp: '1d' };

const UNIT_MS: Record<string, number> = { h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000, mo: 30 * 86_400_000, y: 365 * 86_400_000 };

/** "12h", "1d", "2w", "3mo", "1y" -> milliseconds; a usage error otherwise. */
export function parseLifetime(v: string): number {
  const m = /^(\d+)(h|d|w|mo|y)$/.exec(v.trim());
  const n = m ? Number(m[1]) : 0;
  if (!m || n <= 0) throw new ReleaseError('E_RELEASE_USAGE', `"${v}" is not a lifetime: give a positive number and a unit (h, d, w, mo, y), e.g. 1d or 3mo`);
  return n * UNIT_MS[m[2]!]!;
}

/** The expiry timestamp TUF wants: ISO 8601 UTC, whole seconds. */
export function expiresIn(lifetime: string, now = Date.now()): string {
  return `${new Date(now + parseLifetime(lifetime)).toISOString().slice(0, 19)}Z`;
}
