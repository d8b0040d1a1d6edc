import t, { type Test } from 'tap';
import { EXACT_WAVES_MAX_N, fewestWeightedWaves, firstFitDecreasing, wavesLowerBound } from '../src/weighted-waves.js';
import { rng } from './prng.js';

/** The minimum by brute force: every assignment of validators to waves (small n only). */
function bruteForce(weights: number[], capacity: number, maxPerWave = Infinity): number {
  let best = weights.length;
  const loads: number[] = [];
  const counts: number[] = [];
  const place = (i: number): void => {
    if (loads.length >= best) return;
    if (i === weights.length) {
      best = loads.length;
      return;
    }
    for (let b = 0; b < loads.length; b++) {
      if (loads[b]! + weights[i]! <= capacity && counts[b]! < maxPerWave) {
        loads[b]! += weights[i]!;
        counts[b]!++;
        place(i + 1);
        loads[b]! -= weights[i]!;
        counts[b]!--;
      }
    }
    loads.push(weights[i]!);
    counts.push(1);
    place(i + 1);
    loads.pop();
    counts.pop();
  };
  place(0);
  return best;
}

function checkPacking(t: Test, weights: number[], capacity: number, waves: number[][], maxPerWave = Infinity): void {
  const seen = waves.flat().sort((a, b) => a - b);
  t.same(
    seen,
    weights.map((_, i) => i),
    'every validator in exactly one wave',
  );
  for (const w of waves) t.ok(w.reduce((s, i) => s + weights[i]!, 0) <= capacity && w.length <= maxPerWave, 'each wave within the slack and the count');
}

t.test('the worked example: weights 4,1×9, slack 4 → 4 waves (the heavy one alone)', async (t) => {
  const weights = [4, 1, 1, 1, 1, 1, 1, 1, 1, 1];
  const p = fewestWeightedWaves(weights, 4);
  t.equal(p.waves.length, 4);
  t.ok(p.exact);
  t.ok(
    p.waves.some((w) => w.length === 1 && w[0] === 0),
    'the weight-4 validator goes alone',
  );
  checkPacking(t, weights, 4, p.waves);
});

t.test('the same set with maxUnavailable 3 (f for 10 validators): still 4 waves', async (t) => {
  const weights = [4, 1, 1, 1, 1, 1, 1, 1, 1, 1];
  const p = fewestWeightedWaves(weights, 4, 3);
  t.equal(p.waves.length, 4);
  checkPacking(t, weights, 4, p.waves, 3);
  t.equal(wavesLowerBound([1, 1, 1, 1, 1, 1, 1], 10, 2), 4, 'seven light validators two at a time: 4 waves');
});

t.test('the exact packing equals brute force on random small sets, with and without a count limit', async (t) => {
  const r = rng(7);
  for (let c = 0; c < 300; c++) {
    const n = 1 + Math.floor(r() * 9);
    const capacity = 2 + Math.floor(r() * 12);
    const maxPerWave = c % 3 === 0 ? Infinity : 1 + Math.floor(r() * 4);
    const weights = Array.from({ length: n }, () => 1 + Math.floor(r() * capacity));
    const p = fewestWeightedWaves(weights, capacity, maxPerWave);
    const best = bruteForce(weights, capacity, maxPerWave);
    if (p.waves.length !== best || !p.exact) t.fail(`weights ${weights} capacity ${capacity} max ${maxPerWave}: ${p.waves.length} waves, brute force ${best}`);
    checkPacking(t, weights, capacity, p.waves, maxPerWave);
    t.ok(wavesLowerBound(weights, capacity, maxPerWave) <= p.waves.length, 'the lower bound holds');
    t.ok(firstFitDecreasing(weights, capacity, maxPerWave).length >= p.waves.length, 'first-fit decreasing never beats the optimum');
  }
});

t.test('twenty validators are packed exactly (within the search budget)', async (t) => {
  const r = rng(3);
  const weights = Array.from({ length: 20 }, () => 1 + Math.floor(r() * 30));
  const p = fewestWeightedWaves(weights, 37, 6);
  t.ok(p.exact);
  checkPacking(t, weights, 37, p.waves, 6);
});

t.test('a case where first-fit decreasing needs one more wave than the optimum', async (t) => {
  // Capacity 10: FFD puts 5+4 together, then 4+3+2, and the last 2 opens a third wave;
  // the optimum is 5+3+2 and 4+4+2.
  const weights = [5, 4, 4, 3, 2, 2];
  t.equal(fewestWeightedWaves(weights, 10).waves.length, 2);
  t.equal(firstFitDecreasing(weights, 10).length, 3);
});

t.test('large sets: first-fit decreasing with the lower bound beside it', async (t) => {
  const r = rng(11);
  const weights = Array.from({ length: 100 }, () => 1 + Math.floor(r() * 20));
  const p = fewestWeightedWaves(weights, 60);
  t.notOk(weights.length <= EXACT_WAVES_MAX_N);
  checkPacking(t, weights, 60, p.waves);
  t.ok(p.lowerBound <= p.waves.length);
  t.equal(p.lowerBound, Math.ceil(weights.reduce((a, b) => a + b, 0) / 60));
});

t.test('bad input is refused with the reason', async (t) => {
  t.throws(() => fewestWeightedWaves([3, 5], 4), /weight 1 \(5\) exceeds the slack 4/);
  t.throws(() => fewestWeightedWaves([1], 0), /capacity/);
  t.throws(() => fewestWeightedWaves([1.5], 4), /positive integer/);
  t.throws(() => fewestWeightedWaves([1], 4, 0), /maxPerWave/);
  t.same(fewestWeightedWaves([], 4).waves, []);
});
