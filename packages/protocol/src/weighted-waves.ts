/**
 * The fewest waves a weighted rolling upgrade needs: every wave's voting weight
 * must fit in the slack (active weight − quorum weight), so this is bin packing
 * with the slack as the bin size. Exact for small sets (a subset DP), bounded
 * for large ones. The leader-last rule costs no wave: waves can run in any
 * order, so the wave holding the leader is put last.
 *
 * A wave also holds at most maxUnavailable validators (the plan caps it at f),
 * so this is bin packing with a count limit per bin too.
 *
 * Used by the makespan benchmark as the ideal a weighted rollout is measured
 * against, and worth knowing for a dry run: the coordinator's own dispatch is
 * a first-fit in plan order, which may need more waves than this.
 */

/** Sets up to this size are packed exactly (a bounded search; see fewestWeightedWaves). */
export const EXACT_WAVES_MAX_N = 20;

export interface WavePacking {
  /** Each wave as indices into the weights given. */
  waves: number[][];
  /** Whether `waves` is a proven minimum (the exact DP) or only an achievable packing. */
  exact: boolean;
  /** A proven lower bound on the number of waves (equal to waves.length when exact). */
  lowerBound: number;
}

function assertPackable(weights: readonly number[], capacity: number): void {
  if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity (the slack) must be a positive integer, got ${capacity}`);
  weights.forEach((w, i) => {
    if (!Number.isInteger(w) || w < 1) throw new RangeError(`weight ${i} must be a positive integer, got ${w}`);
    if (w > capacity)
      throw new RangeError(`weight ${i} (${w}) exceeds the slack ${capacity}: that validator can never be taken down while the chain finalizes`);
  });
}

/**
 * A lower bound on the waves any schedule needs:
 * max(ceil(W / C), #{w > C/2}, ceil(n / m)).
 * Proof: a wave takes down at most C (the slack) of weight and every validator
 * goes down once, so waves × C ≥ W. Two validators heavier than C/2 each add up
 * to more than C, so no wave holds two of them: each needs a wave of its own.
 * A wave holds at most m (maxUnavailable) validators, so waves × m ≥ n.
 */
export function wavesLowerBound(weights: readonly number[], capacity: number, maxPerWave = Infinity): number {
  assertPackable(weights, capacity);
  const total = weights.reduce((a, b) => a + b, 0);
  const heavy = weights.filter((w) => 2 * w > capacity).length;
  return Math.max(Math.ceil(total / capacity), heavy, Math.ceil(weights.length / maxPerWave));
}

/** First-fit decreasing: an achievable packing (without a count limit, at most 11/9 × optimum + 6/9 waves). */
export function firstFitDecreasing(weights: readonly number[], capacity: number, maxPerWave = Infinity): number[][] {
  assertPackable(weights, capacity);
  const waves: { load: number; members: number[] }[] = [];
  for (const i of heaviestFirst(weights)) {
    const w = weights[i]!;
    const wave = waves.find((x) => x.load + w <= capacity && x.members.length < maxPerWave);
    if (wave) {
      wave.load += w;
      wave.members.push(i);
    } else waves.push({ load: w, members: [i] });
  }
  return waves.map((x) => x.members);
}

function heaviestFirst(weights: readonly number[]): number[] {
  return weights.map((_, i) => i).sort((a, b) => weights[b]! - weights[a]! || a - b);
}

/** Search nodes one exact packing may visit before it settles for first-fit decreasing. */
const SEARCH_BUDGET = 2_000_000;

/**
 * Whether the validators fit in k waves (each within capacity and maxPerWave):
 * a depth-first search placing the heaviest first, which tries only one of
 * several waves in the same state (same load and count) and only the first
 * empty wave, and gives up on a branch once the weight or the validators left
 * cannot fit in the room left. Returns the packing, null when none exists, or
 * 'budget' when the search ran out of its node budget.
 */
function packInto(weights: readonly number[], capacity: number, maxPerWave: number, k: number): number[][] | null | 'budget' {
  const order = heaviestFirst(weights);
  const load = new Array<number>(k).fill(0);
  const members: number[][] = Array.from({ length: k }, () => []);
  const suffix = new Array<number>(order.length + 1).fill(0);
  for (let j = order.length - 1; j >= 0; j--) suffix[j] = suffix[j + 1]! + weights[order[j]!]!;
  let visits = 0;
  const place = (j: number): boolean | 'budget' => {
    if (j === order.length) return true;
    if (++visits > SEARCH_BUDGET) return 'budget';
    let room = 0;
    let slots = 0;
    for (let b = 0; b < k; b++) {
      if (members[b]!.length < maxPerWave) {
        room += capacity - load[b]!;
        slots += maxPerWave - members[b]!.length;
      }
    }
    if (room < suffix[j]! || slots < order.length - j) return false;
    const i = order[j]!;
    const w = weights[i]!;
    const tried = new Set<string>();
    for (let b = 0; b < k; b++) {
      if (load[b]! + w > capacity || members[b]!.length >= maxPerWave) continue;
      const state = `${load[b]}/${members[b]!.length}`;
      if (tried.has(state)) continue;
      tried.add(state);
      load[b]! += w;
      members[b]!.push(i);
      const r = place(j + 1);
      if (r !== false) return r;
      load[b]! -= w;
      members[b]!.pop();
    }
    return false;
  };
  const r = place(0);
  if (r === 'budget') return 'budget';
  return r ? members.filter((m) => m.length > 0) : null;
}

/**
 * The fewest waves that keep each wave's weight within `capacity` (the slack)
 * and its size within `maxPerWave`: for up to EXACT_WAVES_MAX_N validators the
 * proven minimum (tries k = lower bound, lower bound + 1, … below what
 * first-fit decreasing reached); above, or when the search runs out of its
 * budget, first-fit decreasing with the lower bound beside it.
 */
export function fewestWeightedWaves(weights: readonly number[], capacity: number, maxPerWave = Infinity): WavePacking {
  if (!(maxPerWave >= 1)) throw new RangeError(`maxPerWave must be at least 1, got ${maxPerWave}`);
  const lowerBound = wavesLowerBound(weights, capacity, maxPerWave);
  if (weights.length === 0) return { waves: [], exact: true, lowerBound: 0 };
  const ffd = firstFitDecreasing(weights, capacity, maxPerWave);
  if (ffd.length === lowerBound) return { waves: ffd, exact: true, lowerBound };
  if (weights.length > EXACT_WAVES_MAX_N) return { waves: ffd, exact: false, lowerBound };
  for (let k = lowerBound; k < ffd.length; k++) {
    const r = packInto(weights, capacity, maxPerWave, k);
    if (r === 'budget') return { waves: ffd, exact: false, lowerBound: k };
    if (r) return { waves: r, exact: true, lowerBound: r.length };
  }
  return { waves: ffd, exact: true, lowerBound: ffd.length };
}
