// Scenario 2: rolling upgrade of 7 validators (f = 2) with maxUnavailable 2:
// two nodes upgrade at once, never more than f down, the chain keeps going.
import t from 'tap';
import { preflight } from '../src/testbed/index.js';
import { rollingScenario } from '../src/scenario/rolling.js';

const pf = await preflight();
if (!pf.ok) t.plan(0, pf.reason ?? 'testbed unavailable');
else await t.test('scenario', { timeout: 290_000 }, (t) => rollingScenario(t, { name: 's2', hosts: 7, maxUnavailable: 2, target: '1.1.0' }));
