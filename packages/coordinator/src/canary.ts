/**
 * The canary's metrics verdict: its error rate and latency during the soak,
 * held against the nodes still on the old version (same traffic, same time),
 * or against its own numbers from before the upgrade when no such node reports
 * metrics. Pure, so the sequencer stays pure and the rule is unit-tested.
 *
 * Counters come from agent heartbeats (NodeStatus.metrics, /health* already
 * excluded by the agent). A canary restarts when it upgrades, so its counters
 * may be lower than at soak start: then the window counts from zero.
 */
import type { NodeMetrics } from '@guts-upgrade/protocol';

export interface CanaryLimits {
  /** Largest allowed rise of the error rate (absolute, 0.05 = 5 percentage points). */
  maxErrorRateIncrease: number;
  /** Largest allowed ratio of the canary's mean latency to the reference's. */
  maxLatencyFactor: number;
  /** Latency below this is never a regression, whatever the ratio (loopback noise). */
  minLatencyMs: number;
  /** Fewer requests than this during the soak cannot show a rate: not judged. */
  minRequests: number;
}

export const DEFAULT_CANARY_LIMITS: CanaryLimits = {
  maxErrorRateIncrease: 0.05,
  maxLatencyFactor: 3,
  minLatencyMs: 50,
  minRequests: 50,
};

/** Counters at soak start. */
export type Counters = Pick<NodeMetrics, 'requestsTotal' | 'errorsTotal'>;

/** The canary's numbers before its upgrade (cumulative since its start). */
export interface Baseline {
  errorRate: number | null;
  latencyMs: number | null;
}

export interface CanaryInput {
  canary: { start: Counters | null; now: NodeMetrics | null | undefined };
  /** Healthy nodes still on the old version. */
  reference: { nodeId: string; start: Counters | null; now: NodeMetrics | null | undefined }[];
  baseline: Baseline | null;
  limits: CanaryLimits;
}

export interface CanaryVerdict {
  /** False only when a limit was exceeded. */
  ok: boolean;
  /** Whether there was enough data to judge at all. */
  judged: boolean;
  against: 'peers' | 'baseline' | 'nothing';
  detail: string;
}

function delta(start: Counters | null, now: NodeMetrics): { requests: number; errors: number } {
  // A restart resets the counters; then everything counted since is in the window.
  const reset = !start || now.requestsTotal < start.requestsTotal || now.errorsTotal < start.errorsTotal;
  return reset
    ? { requests: now.requestsTotal, errors: now.errorsTotal }
    : { requests: now.requestsTotal - start.requestsTotal, errors: now.errorsTotal - start.errorsTotal };
}

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const pct = (x: number | null) => (x == null ? '?' : `${(x * 100).toFixed(2)}%`);
const msf = (x: number | null) => (x == null ? '?' : `${x.toFixed(2)} ms`);

export function judgeCanary(input: CanaryInput): CanaryVerdict {
  const { limits } = input;
  const now = input.canary.now;
  if (!now) return { ok: true, judged: false, against: 'nothing', detail: 'the canary reports no metrics' };
  const c = delta(input.canary.start, now);
  if (c.requests < limits.minRequests) {
    return { ok: true, judged: false, against: 'nothing', detail: `only ${c.requests} requests on the canary during the soak (need ${limits.minRequests})` };
  }
  const canaryRate = c.errors / c.requests;

  let refRate: number | null = null;
  let refLatency: number | null = null;
  let against: CanaryVerdict['against'] = 'nothing';
  const refs = input.reference.filter((r): r is typeof r & { now: NodeMetrics } => !!r.now);
  let req = 0;
  let err = 0;
  for (const r of refs) {
    const d = delta(r.start, r.now);
    req += d.requests;
    err += d.errors;
  }
  if (req >= limits.minRequests) {
    refRate = err / req;
    refLatency = median(refs.map((r) => r.now.latencyMs).filter((x): x is number => x != null));
    against = 'peers';
  } else if (input.baseline) {
    refRate = input.baseline.errorRate;
    refLatency = input.baseline.latencyMs;
    against = 'baseline';
  }
  if (against === 'nothing' || refRate == null) {
    return { ok: true, judged: false, against: 'nothing', detail: `canary error rate ${pct(canaryRate)}; no reference (peers or baseline) to compare with` };
  }
  const problems: string[] = [];
  if (canaryRate - refRate > limits.maxErrorRateIncrease) {
    problems.push(`error rate ${pct(canaryRate)} vs ${pct(refRate)} on the ${against} (limit +${pct(limits.maxErrorRateIncrease)})`);
  }
  const lat = now.latencyMs;
  if (lat != null && refLatency != null && lat > limits.minLatencyMs && lat > refLatency * limits.maxLatencyFactor) {
    problems.push(`mean latency ${msf(lat)} vs ${msf(refLatency)} on the ${against} (limit x${limits.maxLatencyFactor})`);
  }
  const detail = problems.length
    ? problems.join('; ')
    : `error rate ${pct(canaryRate)} vs ${pct(refRate)}, latency ${msf(lat)} vs ${msf(refLatency)} (${against})`;
  return { ok: problems.length === 0, judged: true, against, detail };
}

/** Cumulative error rate and latency of a node's last report, as a pre-upgrade baseline. */
export function baselineOf(m: NodeMetrics | null | undefined, minRequests = 1): Baseline | null {
  if (!m) return null;
  return { errorRate: m.requestsTotal >= Math.max(1, minRequests) ? m.errorsTotal / m.requestsTotal : null, latencyMs: m.latencyMs };
}
