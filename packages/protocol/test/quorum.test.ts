import t from 'tap';
import { disruptionBudget, faultTolerance, hasQuorum, idealWaves, quorumSize } from '../src/quorum.js';

t.test('n = 3f + 1 gives f faults and a 2f + 1 quorum', async (t) => {
  for (let f = 0; f <= 33; f++) {
    const n = 3 * f + 1;
    t.equal(faultTolerance(n), f, `f(${n})`);
    t.equal(quorumSize(n), 2 * f + 1, `quorum(${n})`);
  }
});

t.test('sizes between 3f + 1 steps keep f and a safe quorum', async (t) => {
  const table: Array<[number, number, number]> = [
    [0, 0, 0],
    [1, 0, 1],
    [2, 0, 2],
    [3, 0, 3],
    [4, 1, 3],
    [5, 1, 4],
    [6, 1, 5],
    [7, 2, 5],
    [10, 3, 7],
    [100, 33, 67],
  ];
  for (const [n, f, q] of table) {
    t.equal(faultTolerance(n), f, `f(${n})`);
    t.equal(quorumSize(n), q, `quorum(${n})`);
    // Two quorums must overlap in more than f validators, else a fork is possible.
    if (n > 0) t.ok(2 * q - n > f, `quorums of ${n} overlap in an honest validator`);
  }
});

t.test('hasQuorum', async (t) => {
  t.equal(hasQuorum(4, 3), true);
  t.equal(hasQuorum(4, 2), false);
  t.equal(hasQuorum(7, 5), true);
  t.equal(hasQuorum(7, 4), false);
  t.equal(hasQuorum(0, 0), false);
});

t.test('disruption budget counts unhealthy and in-flight validators and never goes below zero', async (t) => {
  t.equal(disruptionBudget(4, 0), 1);
  t.equal(disruptionBudget(4, 1), 0);
  t.equal(disruptionBudget(4, 0, 1), 0);
  t.equal(disruptionBudget(7, 0), 2);
  t.equal(disruptionBudget(7, 1), 1);
  t.equal(disruptionBudget(7, 1, 1), 0);
  t.equal(disruptionBudget(7, 3, 0), 0);
  t.equal(disruptionBudget(100, 10, 5), 18);
});

t.test('ideal waves: non-leaders in groups, the leader alone', async (t) => {
  t.equal(idealWaves(4, 1), 4);
  t.equal(idealWaves(7, 2), 4);
  t.equal(idealWaves(31, 10), 4);
  t.equal(idealWaves(100, 33), 4);
  t.equal(idealWaves(1, 1), 1);
  t.throws(() => idealWaves(4, 0), RangeError);
});

t.test('invalid counts are refused', async (t) => {
  t.throws(() => faultTolerance(-1), RangeError);
  t.throws(() => faultTolerance(1.5), RangeError);
  t.throws(() => disruptionBudget(4, -1), RangeError);
});
