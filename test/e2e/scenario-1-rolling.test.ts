// Scenario 1: rolling upgrade of 4 validators 1.0.0 -> 1.1.0 through the
// coordinator's HTTP API, real agents driving real systemctl on each host.
import t from 'tap';
import { preflight } from '../src/testbed/index.js';
import { rollingScenario } from '../src/scenario/rolling.js';

const pf = await preflight();
if (!pf.ok) t.plan(0, pf.reason ?? 'testbed unavailable');
else await t.test('scenario', { timeout: 290_000 }, (t) => rollingScenario(t, { name: 's1', hosts: 4, maxUnavailable: 1, target: '1.1.0' }));
