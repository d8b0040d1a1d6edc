import t from 'tap';
import { api } from '@guts-upgrade/coordinator';
import type { EventsBody, FleetBody, RolloutDetailBody } from '@guts-upgrade/coordinator';
import { waitFor } from '@guts-upgrade/simulator';
import { auditRollout, makeRig } from './harness.js';

t.test('halt upgrade to 2.0.0 with manual migration, inside a window, with approval', async (t) => {
  // a window that is always open ("every minute, for 2 minutes") and one that never opens today
  const rig = await makeRig(t, { n: 4, windows: [{ name: 'always', cron: '* * * * *', duration: '2m' }] });
  await rig.waitFleetReady();
  const body = { target: rig.fleet.artifact('2.0.0'), strategy: 'halt', options: { window: 'always' } };
  const missing = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', { ...body, options: {} }).catch((e) => e);
  t.equal(missing.code, 'E_MAJOR_NOT_APPROVED', 'a major needs a window');
  const r = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', body);
  const id = r.rollout.id;
  await waitFor(async () => (await api<RolloutDetailBody>(rig.op, 'GET', `/api/v1/rollouts/${id}`)).rollout.state === 'awaiting_approval', {
    what: 'awaiting approval',
    timeoutMs: 120_000,
    intervalMs: 200,
  });
  await new Promise((res) => setTimeout(res, 500));
  t.ok(
    (await api<RolloutDetailBody>(rig.op, 'GET', `/api/v1/rollouts/${id}`)).steps.every((s) => s.state === 'pending'),
    'nothing sent before approval',
  );
  await api<RolloutDetailBody>(rig.op, 'POST', `/api/v1/rollouts/${id}/approve`, { reason: 'change ticket 42' });
  const d = await rig.waitRollout(id);
  t.equal(d.rollout.state, 'completed', d.rollout.reason ?? '');
  const events = (await api<EventsBody>(rig.op, 'GET', `/api/v1/rollouts/${id}/events`)).events;
  const prepared = events.filter((e) => e.type === 'node.dispatched' && e.data.command === 'prepare').length;
  t.equal(prepared, 4, 'every agent prepared first');
  t.ok(
    events.some((e) => e.type === 'halt.finalizing'),
    'the chain finalized again',
  );
  const upgrades = events.filter((e) => e.type === 'command.result' && e.data.kind === 'upgrade');
  t.same(
    upgrades.map((e) => [e.data.outcome, e.data.migration, e.data.runningVersion]),
    Array(4).fill(['succeeded', 'manual', '2.0.0']),
    'every node ran the manual migration',
  );
  const firstUpgrade = events.findIndex((e) => e.type === 'node.dispatched' && e.data.command === 'upgrade');
  const lastPrepared = events.map((e) => e.type === 'command.result' && e.data.kind === 'prepare').lastIndexOf(true);
  t.ok(lastPrepared >= 0 && lastPrepared < firstUpgrade, 'nobody was stopped before every node had staged the artifact');
  const f = await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet');
  t.same(f.versions, { '2.0.0': 4 });
});

t.test('coordinator kill -9 mid-rollout, restart on the same DB: completes, nobody upgraded twice, f respected', async (t) => {
  const rig = await makeRig(t, { n: 7, child: true });
  await rig.waitFleetReady();
  const r = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', { target: rig.fleet.artifact('1.1.0'), options: { maxUnavailable: 2 } });
  const id = r.rollout.id;
  await waitFor(async () => (await api<RolloutDetailBody>(rig.op, 'GET', `/api/v1/rollouts/${id}`)).steps.some((s) => s.state === 'upgrading'), {
    what: 'a node mid-upgrade',
    timeoutMs: 120_000,
    intervalMs: 200,
  });
  await rig.crashAndRestart();
  await waitFor(async () => (await api<RolloutDetailBody>(rig.op, 'GET', `/api/v1/rollouts/${id}`)).steps.filter((s) => s.state === 'upgraded').length >= 3, {
    what: 'more progress',
    timeoutMs: 120_000,
    intervalMs: 200,
  });
  await rig.crashAndRestart();
  const d = await rig.waitRollout(id);
  t.equal(d.rollout.state, 'completed', d.rollout.reason ?? '');
  const a = await auditRollout(rig, id, 7);
  t.equal(a.order.length, 7, 'exactly one upgrade command per node');
  t.ok(a.maxInFlight <= 2, `f=2 respected (saw ${a.maxInFlight})`);
  t.same(a.leaderViolations, [], 'the leader still went last across the restarts');
  const events = (await api<EventsBody>(rig.op, 'GET', `/api/v1/rollouts/${id}/events`)).events;
  const succeeded = events.filter((e) => e.type === 'command.result' && e.data.kind === 'upgrade');
  t.equal(new Set(succeeded.map((e) => e.nodeId)).size, 7);
  t.equal(succeeded.length, 7, 'each upgrade ran once (one result per node)');
});
