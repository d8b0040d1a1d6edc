/**
 * What a failed command carries for the operator: the check that failed and
 * the node's own last log lines. The agent bounds what it sends and the
 * coordinator bounds what it keeps by the same rule, because a result is an
 * agent's claim: a broken or hostile agent must not fill the coordinator's
 * database, its webhooks or an operator's terminal.
 */
import type { CheckResult, Result } from './messages.js';

/** The node log lines a failure carries: the newest ones. */
export const NODE_LOG_LINES = 50;
/** Longest kept line, in characters; a longer one is cut with a marker. */
export const NODE_LOG_LINE_CHARS = 1024;
/** All kept lines together, in UTF-8 bytes; the oldest lines go first. */
export const NODE_LOG_BYTES = 16 * 1024;

const CUT = ' …[cut]';
const utf8 = new TextEncoder();

/** The newest NODE_LOG_LINES lines, each at most NODE_LOG_LINE_CHARS, together at most NODE_LOG_BYTES. */
export function boundNodeLog(lines: readonly string[]): string[] {
  const kept: string[] = [];
  let bytes = 0;
  for (let i = lines.length - 1; i >= 0 && kept.length < NODE_LOG_LINES; i--) {
    const raw = lines[i]!;
    const line = raw.length > NODE_LOG_LINE_CHARS ? raw.slice(0, NODE_LOG_LINE_CHARS - CUT.length) + CUT : raw;
    const size = utf8.encode(line).length + 1;
    if (bytes + size > NODE_LOG_BYTES) break;
    bytes += size;
    kept.push(line);
  }
  return kept.reverse();
}

/** The check that decided a failure: the last one that did not pass (checks are recorded in order). */
export function failedCheckOf(checks: readonly CheckResult[]): CheckResult | null {
  for (let i = checks.length - 1; i >= 0; i--) if (!checks[i]!.ok) return checks[i]!;
  return null;
}

/** A failure's evidence as the coordinator keeps and shows it. */
export interface FailureEvidence {
  /** The failing check (name, what it saw), or null when no check failed (e.g. the node exited). */
  check: { name: string; detail: string; last?: string; waitedMs?: number } | null;
  /** The node's last log lines, oldest first, bounded by boundNodeLog. */
  nodeLog: string[];
}

/** The evidence of a result that did not succeed; null for a success or a result without any. */
export function failureEvidence(r: Pick<Result, 'outcome' | 'evidence'> | null | undefined): FailureEvidence | null {
  if (!r || r.outcome === 'succeeded' || !r.evidence) return null;
  const c = failedCheckOf(r.evidence.checks);
  const nodeLog = boundNodeLog(r.evidence.nodeLog ?? []);
  if (!c && nodeLog.length === 0) return null;
  return {
    check: c
      ? {
          name: c.name,
          detail: (c.detail ?? '').slice(0, 1024),
          ...(c.last !== undefined ? { last: c.last } : {}),
          ...(c.waitedMs !== undefined ? { waitedMs: c.waitedMs } : {}),
        }
      : null,
    nodeLog,
  };
}
