import t from 'tap';
import { api } from '@guts-upgrade/coordinator';
import { makeRig, until } from './harness.js';

t.test('canary with a bad build: rollout stops, the canary is rolled back, nobody else touched', async (t) => {
  const rig = await makeRig(t, { n: 4 });
  await rig.waitFleetReady();
  const r = await api(rig.op, 'POST', '/api/v1/rollouts', { target: rig.fleet.artifact('1.1.0', 'exits'), strategy: 'canary', options: { canary: 'v2' } });
  const d = await rig.waitRollout(r.rollout.id);
  t.equal(d.rollout.state, 'failed');
  t.equal(d.rollout.code, 'E_CANARY_FAILED');
  t.same(d.steps.filter((s: any) => s.state !== 'pending').map((s: any) => s.nodeId), ['v2']);
  const events = (await api(rig.op, 'GET', `/api/v1/rollouts/${r.rollout.id}/events`)).events as any[];
  const results = events.filter((e) => e.type === 'command.result');
  t.same(results.map((e) => [e.nodeId, e.data.kind, e.data.outcome, e.data.runningVersion]), [['v2', 'upgrade', 'rolled_back', '1.0.0']], 'the canary agent rolled itself back; no other command ran');
  t.equal(events.filter((e) => e.type === 'node.dispatched').length, 1, 'only the canary was dispatched');
  await until(async () => {
    const f = await api(rig.op, 'GET', '/api/v1/fleet');
    return f.down.length === 0 && f.versions['1.0.0'] === 4;
  }, 'canary back on 1.0.0 and healthy');
});

t.test('pause, resume, abort and rollback with real agents', async (t) => {
  const rig = await makeRig(t, { n: 4 });
  await rig.waitFleetReady();
  const r = await api(rig.op, 'POST', '/api/v1/rollouts', { target: rig.fleet.artifact('1.1.0'), options: { stabilizationMs: 1500 } });
  const id = r.rollout.id;
  await until(async () => (await api(rig.op, 'GET', `/api/v1/rollouts/${id}`)).steps.some((s: any) => s.state === 'upgraded'), 'first node upgraded');
  t.equal((await api(rig.op, 'POST', `/api/v1/rollouts/${id}/pause`, {})).rollout.state, 'paused');
  const upgraded = async () => (await api(rig.op, 'GET', `/api/v1/rollouts/${id}`)).steps.filter((s: any) => s.state !== 'pending').length;
  const before = await upgraded();
  await new Promise((res) => setTimeout(res, 2500));
  t.equal(await upgraded(), before, 'nothing dispatched while paused');
  t.equal((await api(rig.op, 'POST', `/api/v1/rollouts/${id}/resume`, {})).rollout.state, 'running');
  await until(async () => (await upgraded()) > before, 'progress after resume');
  t.equal((await api(rig.op, 'POST', `/api/v1/rollouts/${id}/abort`, {})).rollout.state, 'aborted');
  t.equal((await api(rig.op, 'POST', `/api/v1/rollouts/${id}/rollback`, {})).rollout.state, 'rolling_back');
  const d = await rig.waitRollout(id, ['rolled_back', 'failed']);
  t.equal(d.rollout.state, 'rolled_back', d.rollout.reason ?? '');
  await until(async () => {
    const f = await api(rig.op, 'GET', '/api/v1/fleet');
    return f.down.length === 0 && f.versions['1.0.0'] === 4;
  }, 'all back on 1.0.0');
});
