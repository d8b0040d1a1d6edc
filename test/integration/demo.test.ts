/**
 * `npm run demo`, exactly as README.md gives it (after `npm ci`, which the
 * test run has done): a simulated 4-validator network upgraded 1.0.0 -> 1.1.0
 * by the coordinator and real agents, run from the test kit.
 */
import t from 'tap';
import { npmRun } from '../src/npm-run.js';

t.test('npm run demo upgrades the simulated fleet', async (t) => {
  const { code, out } = await npmRun(t, ['demo']);
  t.equal(code, 0, 'exits 0');
  t.match(out, /fleet: n=4 f=1 quorum=3/, 'the four validators and their agents came up');
  t.match(out, /summary: rollout \S+ completed/, 'the rollout completed');
  t.match(out, /versions now: \{"1\.1\.0":4\}/, 'every node runs 1.1.0');
  if (code !== 0) t.comment(out.slice(-4000));
});
