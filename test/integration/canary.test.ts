import t from 'tap';
import { api } from '@guts-upgrade/coordinator';
import type { EventsBody, FleetBody, RolloutDetailBody } from '@guts-upgrade/coordinator';
import { waitFor } from '@guts-upgrade/simulator';
import { makeRig } from './harness.js';

t.test('canary with a bad build: rollout stops, the canary is rolled back, nobody else touched', async (t) => {
  const rig = await makeRig(t, { n: 4 });
  await rig.waitFleetReady();
  const r = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', {
    target: rig.fleet.artifact('1.1.0', 'exits'),
    strategy: 'canary',
    options: { canary: 'v2' },
  });
  const d = await rig.waitRollout(r.rollout.id);
  t.equal(d.rollout.state, 'failed');
  t.equal(d.rollout.code, 'E_CANARY_FAILED');
  t.same(
    d.steps.filter((s) => s.state !== 'pending').map((s) => s.nodeId),
    ['v2'],
  );
  const events = (await api<EventsBody>(rig.op, 'GET', `/api/v1/rollouts/${r.rollout.id}/events`)).events;
  const results = events.filter((e) => e.type === 'command.result');
  t.same(
    results.map((e) => [e.nodeId, e.data.kind, e.data.outcome, e.data.runningVersion]),
    [['v2', 'upgrade', 'rolled_back', '1.0.0']],
    'the canary agent rolled itself back; no other command ran',
  );
  t.equal(events.filter((e) => e.type === 'node.dispatched').length, 1, 'only the canary was dispatched');
  await waitFor(
    async () => {
      const f = await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet');
      return f.down.length === 0 && f.versions['1.0.0'] === 4;
    },
    { what: 'canary back on 1.0.0 and healthy', timeoutMs: 120_000, intervalMs: 200 },
  );
});

t.test('canary that degrades only after its agent verified it: the soak metrics catch it and the coordinator rolls it back', async (t) => {
  // The degrading build passes the agent's verification and then adds 300 ms
  // to every API request; health stays green, so only the soak's comparison
  // of the canary's latency with the nodes still on 1.0.0 can tell.
  const rig = await makeRig(t, { n: 4, timings: { degrade_after_ms: 8_000, degrade_latency_ms: 300 } });
  await rig.waitFleetReady();
  const r = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', {
    target: rig.fleet.artifact('1.1.0', 'degrades'),
    strategy: 'canary',
    options: { canary: 'v1', soakMs: 20_000, canaryLimits: { minRequests: 20 } },
  });
  const id = r.rollout.id;
  const d = await rig.waitRollout(id, ['rolled_back', 'failed', 'completed']);
  const events = (await api<EventsBody>(rig.op, 'GET', `/api/v1/rollouts/${id}/events`)).events;
  const results = events.filter((e) => e.type === 'command.result').map((e) => [e.nodeId, e.data.kind, e.data.outcome]);
  t.same(results[0], ['v1', 'upgrade', 'succeeded'], 'the agent verified the canary and reported success');
  t.ok(
    events.some((e) => e.type === 'canary.soaking' && e.nodeId === 'v1'),
    'the soak started',
  );
  t.equal(d.rollout.code, 'E_CANARY_FAILED');
  t.match(d.rollout.reason, /failed its soak: metrics: mean latency/, `judged on latency against the peers: ${d.rollout.reason}`);
  t.equal(d.rollout.state, 'rolled_back', 'the coordinator rolled the canary back');
  t.same(results.slice(1), [['v1', 'rollback', 'succeeded']], 'one rollback, on the canary only');
  t.same(
    events.filter((e) => e.type === 'node.dispatched').map((e) => [e.nodeId, e.data.command]),
    [
      ['v1', 'upgrade'],
      ['v1', 'rollback'],
    ],
    'no other node was touched',
  );
  await waitFor(
    async () => {
      const f = await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet');
      return f.down.length === 0 && f.versions['1.0.0'] === 4;
    },
    { what: 'canary back on 1.0.0 and healthy', timeoutMs: 120_000, intervalMs: 200 },
  );
});

t.test('a good canary passes a soak judged on its metrics, then the rest follow', async (t) => {
  const rig = await makeRig(t, { n: 4 });
  await rig.waitFleetReady();
  const r = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', {
    target: rig.fleet.artifact('1.1.0'),
    strategy: 'canary',
    options: { canary: 'v1', soakMs: 15_000, canaryLimits: { minRequests: 20 } },
  });
  const d = await rig.waitRollout(r.rollout.id, ['completed', 'failed', 'rolled_back', 'paused']);
  t.equal(d.rollout.state, 'completed', d.rollout.reason ?? '');
  const events = (await api<EventsBody>(rig.op, 'GET', `/api/v1/rollouts/${r.rollout.id}/events`)).events;
  const passed = events.find((e) => e.type === 'canary.passed');
  t.ok(passed, 'the soak passed');
  const metrics = passed?.data.metrics as { judged?: unknown; against?: unknown; detail?: unknown } | undefined;
  t.same([metrics?.judged, metrics?.against], [true, 'peers'], `judged against the peers on 1.0.0: ${metrics?.detail}`);
  const dispatched = events.filter((e) => e.type === 'node.dispatched').map((e) => e.nodeId);
  t.equal(dispatched[0], 'v1', 'the canary went first');
  t.equal(dispatched.length, 4, 'then the other three');
  await waitFor(async () => (await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet')).versions['1.1.0'] === 4, {
    what: 'all on 1.1.0',
    timeoutMs: 120_000,
    intervalMs: 200,
  });
});

t.test('pause, resume, abort and rollback with real agents', async (t) => {
  const rig = await makeRig(t, { n: 4 });
  await rig.waitFleetReady();
  const r = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', { target: rig.fleet.artifact('1.1.0'), options: { stabilizationMs: 1500 } });
  const id = r.rollout.id;
  await waitFor(async () => (await api<RolloutDetailBody>(rig.op, 'GET', `/api/v1/rollouts/${id}`)).steps.some((s) => s.state === 'upgraded'), {
    what: 'first node upgraded',
    timeoutMs: 120_000,
    intervalMs: 200,
  });
  t.equal((await api<RolloutDetailBody>(rig.op, 'POST', `/api/v1/rollouts/${id}/pause`, {})).rollout.state, 'paused');
  const upgraded = async () => (await api<RolloutDetailBody>(rig.op, 'GET', `/api/v1/rollouts/${id}`)).steps.filter((s) => s.state !== 'pending').length;
  const before = await upgraded();
  await new Promise((res) => setTimeout(res, 2500));
  t.equal(await upgraded(), before, 'nothing dispatched while paused');
  t.equal((await api<RolloutDetailBody>(rig.op, 'POST', `/api/v1/rollouts/${id}/resume`, {})).rollout.state, 'running');
  await waitFor(async () => (await upgraded()) > before, { what: 'progress after resume', timeoutMs: 120_000, intervalMs: 200 });
  t.equal((await api<RolloutDetailBody>(rig.op, 'POST', `/api/v1/rollouts/${id}/abort`, {})).rollout.state, 'aborted');
  t.equal((await api<RolloutDetailBody>(rig.op, 'POST', `/api/v1/rollouts/${id}/rollback`, {})).rollout.state, 'rolling_back');
  const d = await rig.waitRollout(id, ['rolled_back', 'failed']);
  t.equal(d.rollout.state, 'rolled_back', d.rollout.reason ?? '');
  await waitFor(
    async () => {
      const f = await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet');
      return f.down.length === 0 && f.versions['1.0.0'] === 4;
    },
    { what: 'all back on 1.0.0', timeoutMs: 120_000, intervalMs: 200 },
  );
});
