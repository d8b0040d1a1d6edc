/**
 * BFT quorum math shared by the coordinator (how many validators may be down)
 * and the simulator (when the chain may finalize).
 *
 * n validators tolerate f = floor((n - 1) / 3) faults. The quorum is n - f,
 * which is exactly 2f + 1 when n = 3f + 1 and stays safe (two quorums always
 * overlap in an honest validator) for the other sizes too.
 */

function assertCount(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0) {
    throw new RangeError(`${name} must be a non-negative integer, got ${value}`);
  }
}

/** Faults tolerated by n validators: f = floor((n - 1) / 3). */
export function faultTolerance(n: number): number {
  assertCount('n', n);
  return n === 0 ? 0 : Math.floor((n - 1) / 3);
}

/** Validators that must be up and reachable for the chain to finalize. */
export function quorumSize(n: number): number {
  assertCount('n', n);
  return n - faultTolerance(n);
}

/** Whether `up` reachable validators out of `n` can finalize blocks. */
export function hasQuorum(n: number, up: number): boolean {
  assertCount('up', up);
  return n > 0 && up >= quorumSize(n);
}

/**
 * How many more validators may be taken down right now without risking
 * liveness: f minus those already unhealthy and those already being upgraded,
 * never below zero.
 */
export function disruptionBudget(n: number, unhealthy: number, inFlight = 0): number {
  assertCount('unhealthy', unhealthy);
  assertCount('inFlight', inFlight);
  return Math.max(0, faultTolerance(n) - unhealthy - inFlight);
}

/**
 * Waves of an ideal rolling schedule: the n - 1 non-leaders in groups of
 * maxUnavailable, then the leader alone.
 */
export function idealWaves(n: number, maxUnavailable: number): number {
  assertCount('n', n);
  if (!Number.isInteger(maxUnavailable) || maxUnavailable < 1) {
    throw new RangeError(`maxUnavailable must be a positive integer, got ${maxUnavailable}`);
  }
  if (n <= 1) return n;
  return Math.ceil((n - 1) / maxUnavailable) + 1;
}
