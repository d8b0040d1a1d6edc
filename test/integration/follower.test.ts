/**
 * A follower on real parts: one validator (f = 0: no validator may go down in a
 * rolling upgrade) and a follower, simulator processes with real agents (the
 * follower's configured `role: follower`) and the coordinator. The follower is
 * registered as one, binds its own key outside the set without an alert, and a
 * rolling upgrade of it goes through outside the budget, verified by its real
 * agent against a node that never votes; the validator meanwhile keeps
 * finalizing alone and is never touched.
 */
import t from 'tap';
import { api, type FleetBody, type NodeListBody, type RolloutDetailBody } from '@guts-upgrade/coordinator';
import { consensusStatus, waitFor } from '@guts-upgrade/simulator';
import { makeRig } from './harness.js';

t.test('a rolling upgrade of a follower, outside the budget of a one-validator network', async (t) => {
  const rig = await makeRig(t, { n: 1, followers: 1 });
  await rig.waitFleetReady();
  const [v0, f0] = rig.fleet.nodes;
  t.equal(f0?.role, 'follower');
  const listed = await api<NodeListBody>(rig.op, 'GET', '/api/v1/nodes');
  t.same(
    listed.nodes.map((n) => [n.id, n.role]),
    [
      ['f0', 'follower'],
      ['v0', 'validator'],
    ],
  );
  const fleet = await waitFor(
    async () => {
      const f = await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet');
      return f.chain?.status === 'adopted' ? f : null;
    },
    { what: 'the set adopted', timeoutMs: 30_000, intervalMs: 200 },
  );
  t.equal(fleet.n, 1, 'n counts the validator only');
  t.same(
    fleet.alerts.filter((a) => /f0/.test(a.message)),
    [],
    "the follower's key outside the set raises nothing",
  );
  t.same(
    fleet.chain?.validators.map((v) => v.node),
    ['v0'],
    'the set is the validator alone',
  );

  // Every node: f = 0 forbids a rolling upgrade of the validator.
  const refused = await api(rig.op, 'POST', '/api/v1/rollouts/plan', { target: { version: '1.1.0' } }).catch((e: { code: string }) => e);
  t.equal((refused as { code: string }).code, 'E_DISRUPTION_BUDGET', 'the validator cannot go down');

  const h0 = (await consensusStatus(v0!))!.finalized_height;
  const r = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', { target: rig.fleet.artifact('1.1.0'), nodes: ['f0'] });
  const done = await rig.waitRollout(r.rollout.id);
  t.equal(done.rollout.state, 'completed', done.rollout.reason ?? '');
  t.equal(done.steps.find((s) => s.nodeId === 'f0')?.state, 'upgraded');
  const h = await fetch(`${f0!.apiUrl}/health`).then((x) => x.json() as Promise<{ version: string }>);
  t.equal(h.version, '1.1.0', 'the follower runs the new version');
  const v = await fetch(`${v0!.apiUrl}/health`).then((x) => x.json() as Promise<{ version: string }>);
  t.equal(v.version, '1.0.0', 'the validator was not touched');
  const after = (await consensusStatus(v0!))!.finalized_height;
  t.ok(after > h0, `the validator finalized on, alone (${h0} -> ${after})`);
  await waitFor(async () => ((await consensusStatus(f0!))?.finalized_height ?? 0) >= after, { what: 'the follower caught up', timeoutMs: 30_000 });
  t.equal((await consensusStatus(f0!))?.is_leader, false, 'and it never leads');
});
