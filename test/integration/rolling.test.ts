import t from 'tap';
import { api } from '@guts-upgrade/coordinator';
import type { FleetBody, RolloutDetailBody } from '@guts-upgrade/coordinator';
import { auditRollout, livenessDuringUpgrades, makeRig } from './harness.js';

// Four validators (f = 1). Seven (f = 2) run rolling twice elsewhere, and CI's 40 minutes have
// no room for a third: with a coordinator killed mid-rollout (halt-crash.test.ts) and under real
// systemd (test/e2e/scenario-2-rolling-7.test.ts), with the same checks.
for (const n of [4]) {
  t.test(`rolling upgrade of ${n} validators: never more than f, leader last, chain never stalls`, async (t) => {
    const rig = await makeRig(t, { n });
    await rig.waitFleetReady();
    const f = Math.floor((n - 1) / 3);
    const before = await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet');
    t.ok(
      before.nodes.every((x) => x.metrics && Number.isInteger(x.metrics.requestsTotal)),
      'heartbeats carry the node metrics',
    );
    const t0 = Date.now();
    const r = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', {
      target: rig.fleet.artifact('1.1.0'),
      strategy: 'rolling',
      options: { maxUnavailable: f },
    });
    const d = await rig.waitRollout(r.rollout.id);
    t.equal(d.rollout.state, 'completed', d.rollout.reason ?? '');
    t.ok(d.steps.every((s) => s.state === 'upgraded'));
    const a = await auditRollout(rig, r.rollout.id, n);
    t.ok(a.maxInFlight <= f, `at most f=${f} in flight (saw ${a.maxInFlight})`);
    t.same(a.leaderViolations, [], 'no node was dispatched while it led (except the last)');
    t.equal(a.order.length, n, 'one upgrade command per node');
    t.equal(new Set(a.order).size, n, 'each node exactly once');
    const fleet = await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet');
    t.same(fleet.versions, { '1.1.0': n });
    // The chain kept finalizing while each node was down (observed in the nodes' histories).
    const live = await livenessDuringUpgrades(rig, r.rollout.id);
    t.equal(live.windows, n, 'an upgrade window per node');
    t.same(live.stalled, [], 'blocks were finalized during every upgrade');
    t.ok(live.leaders > 1, `leadership rotated during the rollout (${live.leaders} leaders)`);
    t.comment(`longest finalization gap ${rig.fleet.maxStallMs({ from: t0, to: Date.now() })} ms (informational; timings belong to bench)`);
  });
}
