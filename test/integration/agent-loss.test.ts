import t from 'tap';
import { api } from '@guts-upgrade/coordinator';
import type { EventsBody, FleetBody, RolloutDetailBody } from '@guts-upgrade/coordinator';
import { waitFor } from '@guts-upgrade/simulator';
import { auditRollout, makeRig } from './harness.js';

t.test('an agent that disconnects mid-step: shown unreachable, still counted in flight, its result lands after it returns', async (t) => {
  const rig = await makeRig(t, { n: 4 });
  await rig.waitFleetReady();
  const r = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', { target: rig.fleet.artifact('1.1.0'), options: { maxUnavailable: 1 } });
  const id = r.rollout.id;
  const step = await waitFor(async () => (await api<RolloutDetailBody>(rig.op, 'GET', `/api/v1/rollouts/${id}`)).steps.find((s) => s.state === 'upgrading'), {
    what: 'a node mid-upgrade',
    timeoutMs: 120_000,
    intervalMs: 200,
  });
  const node = rig.fleet.nodes.find((x) => x.id === step.nodeId)!;
  // SIGTERM: the agent drops the coordinator link at once but finishes its command before exiting.
  const stopped = rig.fleet.stopAgent(node, 'SIGTERM');
  const seen = await waitFor(
    async () => {
      const [d, f] = await Promise.all([api<RolloutDetailBody>(rig.op, 'GET', `/api/v1/rollouts/${id}`), api<FleetBody>(rig.op, 'GET', '/api/v1/fleet')]);
      const s = d.steps.find((x) => x.nodeId === node.id);
      return s?.state === 'upgrading' && s.agent === 'unreachable' ? { s, f } : null;
    },
    { what: 'the step shown with an unreachable agent', timeoutMs: 120_000, intervalMs: 200 },
  );
  t.equal(seen.s.agent, 'unreachable', 'the in-flight step says its agent is unreachable');
  t.ok(seen.f.inFlight.includes(node.id), 'still counted in flight');
  t.ok(seen.f.unreachable.includes(node.id), 'listed as unreachable');
  t.ok(
    seen.f.alerts.some((a) => a.code === 'IN_FLIGHT_UNREACHABLE' && a.message.includes(node.id)),
    'an alert names it',
  );
  t.equal(seen.f.disruptionBudget, 0, 'no budget left while its state is unknown');
  await stopped;
  // Away long enough, the loss is said once as an event (and to webhooks), not only in the fleet's alerts.
  const lost = await waitFor(
    async () =>
      (await api<EventsBody>(rig.op, 'GET', `/api/v1/rollouts/${id}/events`)).events.find((e) => e.type === 'node.agent_lost' && e.nodeId === node.id),
    { what: 'node.agent_lost', timeoutMs: 90_000, intervalMs: 500 },
  );
  t.match(lost.data, { code: 'E_AGENT_LOST', message: /has not reported for \d+ s during (upgrading|verifying)/ }, String(lost.data.message));
  rig.fleet.startAgent(node);
  const d = await rig.waitRollout(id);
  t.equal(d.rollout.state, 'completed', d.rollout.reason ?? '');
  const a = await auditRollout(rig, id, 4);
  t.ok(a.maxInFlight <= 1, `f=1 respected (saw ${a.maxInFlight})`);
  t.equal(a.order.length, 4, 'one upgrade command per node');
  const events = (await api<EventsBody>(rig.op, 'GET', `/api/v1/rollouts/${id}/events`)).events;
  const results = events.filter((e) => e.type === 'command.result' && e.nodeId === node.id);
  t.equal(results.length, 1, 'its one result arrived after it reconnected');
  t.equal(events.filter((e) => e.type === 'node.agent_lost').length, 1, 'the loss said once');
  t.ok(
    events.some((e) => e.type === 'node.agent_back' && e.nodeId === node.id),
    'and its return',
  );
  t.equal(results[0]?.data.outcome, 'succeeded');
  const f = await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet');
  t.same(f.versions, { '1.1.0': 4 });
  t.same(f.unreachable, []);
});
