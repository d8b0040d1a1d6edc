/**
 * Safety from the chain's own truth, on real processes: a real coordinator,
 * real agents, simulated guts-nodes whose chain follows the protocol's rules
 * (weights, leader of view v = index v mod k, skipped views, certificates of
 * exactly the quorum). An outside probe polls every node's own /health/ready
 * and counts the weight up; it must never fall below the quorum weight.
 */
import t from 'tap';
import { api, type EventsBody, type FleetBody, type RolloutDetailBody } from '@guts-upgrade/coordinator';
import { quorumWeightFor } from '@guts-upgrade/protocol';
import { waitFor } from '@guts-upgrade/simulator';
import { makeRig, type Rig } from './harness.js';
import { weightProbe } from './probes.js';

async function chainReady(rig: Rig, liveAtLeast: number): Promise<FleetBody> {
  return waitFor(
    async () => {
      const f = await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet');
      const live = f.chain?.validators.filter((v) => v.live).length ?? 0;
      return f.chain?.status === 'adopted' && live >= liveAtLeast && f.down.length === 0 ? f : null;
    },
    { what: `chain adopted with ${liveAtLeast} validators proven live`, timeoutMs: 120_000, intervalMs: 250 },
  );
}

/** Intervals [dispatched, upgraded or failed] per node, from the audit log. */
async function downIntervals(rig: Rig, id: string): Promise<Map<string, [number, number]>> {
  const ev = await api<EventsBody>(rig.op, 'GET', `/api/v1/rollouts/${id}/events?after=0`);
  const out = new Map<string, [number, number]>();
  for (const e of ev.events) {
    if (!e.nodeId) continue;
    const at = Date.parse(e.at);
    if (e.type === 'node.dispatched') out.set(e.nodeId, [at, Infinity]);
    else if ((e.type === 'node.upgraded' || e.type === 'node.failed') && out.has(e.nodeId)) out.get(e.nodeId)![1] = at;
  }
  return out;
}

t.test('weights 3,1,1,1,1,1,1: the heavy validator goes down only alone, never below quorum 6', async (t) => {
  // Seven validators: the heavy one (3) is exactly the slack (9 - 6), so it can only go alone.
  const weights = [3, 1, 1, 1, 1, 1, 1];
  const rig = await makeRig(t, { n: 7, chain: { weights } });
  const before = await chainReady(rig, 7);
  t.equal(before.chain?.totalWeight, 9);
  t.equal(before.chain?.quorumWeight, 6);
  t.equal(before.chain?.largestSlack, 3);
  const plan = await api<{ plan: { waves: string[][]; chain: { waveWeights: number[] } } }>(rig.op, 'POST', '/api/v1/rollouts/plan', {
    target: rig.fleet.artifact('1.1.0'),
    options: { maxUnavailable: 2 },
  });
  t.ok(
    plan.plan.chain.waveWeights.every((w) => w <= 3),
    `the dry run shows each wave's weight: ${plan.plan.chain.waveWeights.join(', ')}`,
  );
  const probe = weightProbe(rig);
  const r = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', { target: rig.fleet.artifact('1.1.0'), options: { maxUnavailable: 2 } });
  const d = await rig.waitRollout(r.rollout.id);
  const { lowest, lowestDown, samples, retried } = await probe.stop();
  t.equal(d.rollout.state, 'completed', d.rollout.reason ?? '');
  t.ok(
    lowest >= 6,
    `weight up never below quorum 6 by the outside probe (lowest ${lowest} with ${lowestDown.join(',')} down, ${samples} samples, ${retried} slow answers asked again)`,
  );
  t.comment(`longest stall of finalization during the rollout: ${rig.fleet.maxStallMs({ from: d.rollout.createdAt })} ms (informational)`);
  const down = await downIntervals(rig, r.rollout.id);
  const heavy = down.get('v0');
  t.ok(heavy, 'the heavy validator was upgraded');
  const overlapping = [...down].filter(([id, [a, b]]) => id !== 'v0' && heavy && a < heavy[1] && heavy[0] < b).map(([id]) => id);
  t.same(overlapping, [], 'no other node was down while the heavy validator was');
});

t.test('weights 5,1,1,1: a plan that needs the heavy validator down is refused, halt is not', async (t) => {
  const rig = await makeRig(t, { n: 4, chain: { weights: [5, 1, 1, 1] } });
  const f = await chainReady(rig, 4);
  t.equal(f.chain?.quorumWeight, 6);
  t.equal(f.chain?.largestSlack, 2);
  const refused = await api(rig.op, 'POST', '/api/v1/rollouts', { target: rig.fleet.artifact('1.1.0') }).then(
    () => null,
    (err: { code?: string; message: string }) => err,
  );
  t.equal(refused?.code, 'E_DISRUPTION_BUDGET');
  t.match(refused?.message, /v0 \(validator v0, weight 5\).*largest slack of epoch 0 is 2.*halt strategy/);
  const list = await api<{ rollouts: unknown[] }>(rig.op, 'GET', '/api/v1/rollouts');
  t.equal(list.rollouts.length, 0, 'nothing was created');
  const light = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', { target: rig.fleet.artifact('1.1.0'), nodes: ['v1', 'v2', 'v3'] });
  const d = await rig.waitRollout(light.rollout.id);
  t.equal(d.rollout.state, 'completed', 'the light validators upgrade one by one');
});

t.test('seven validators of weight 1, four managed, two unmanaged stopped: the rollout waits, says why, finishes after they return', async (t) => {
  const rig = await makeRig(t, { n: 4, chain: { unmanaged: 3 } });
  await chainReady(rig, 7);
  const stopped = rig.fleet.unmanaged.slice(0, 2);
  for (const n of stopped) await rig.fleet.stopNode(n);
  // The chain still finalizes with 5 of 7 (quorum 5); the coordinator sees them skip their views.
  await waitFor(
    async () => {
      const f = await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet');
      return f.chain && f.chain.validators.filter((v) => !v.live && !v.managed).length === 2 ? f : null;
    },
    { what: 'two unmanaged validators seen skipping their views', timeoutMs: 90_000, intervalMs: 250 },
  );
  const probe = weightProbe(rig);
  const r = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', { target: rig.fleet.artifact('1.1.0') });
  const waiting = await waitFor(
    async () => {
      const d = await api<RolloutDetailBody>(rig.op, 'GET', `/api/v1/rollouts/${r.rollout.id}`);
      return d.rollout.data.waiting ?? null;
    },
    { what: 'the rollout says why it waits', timeoutMs: 30_000, intervalMs: 200 },
  );
  t.match(waiting, /network slack 0 < needed 1: 2 validator\(s\) not proven live \(2 unmanaged\)/);
  await new Promise((res) => setTimeout(res, 3000));
  const held = await api<RolloutDetailBody>(rig.op, 'GET', `/api/v1/rollouts/${r.rollout.id}`);
  t.ok(
    held.steps.every((s) => s.state === 'pending'),
    'nothing dispatched while the slack is 0',
  );
  const ev = await api<EventsBody>(rig.op, 'GET', `/api/v1/rollouts/${r.rollout.id}/events?after=0`);
  t.ok(
    ev.events.some((e) => e.type === 'rollout.waiting'),
    'a rollout.waiting event carries the reason',
  );
  const metrics = await fetch(`${rig.url}/metrics`).then((x) => x.text());
  t.match(metrics, /guts_upgrade_chain_slack 0/, 'the metric shows the slack');
  const t0 = Date.now();
  for (const n of stopped) await rig.fleet.startNode(n);
  const d = await rig.waitRollout(r.rollout.id);
  const { lowest, lowestDown, samples, retried } = await probe.stop();
  t.equal(d.rollout.state, 'completed', d.rollout.reason ?? '');
  t.ok(
    lowest >= quorumWeightFor(7),
    `weight up never below quorum 5 (lowest ${lowest} with ${lowestDown.join(',')} down, ${samples} samples, ${retried} asked again)`,
  );
  t.comment(`finished ${Math.round((Date.now() - t0) / 1000)} s after the two came back (informational)`);
});

t.test('a lying agent (height 10^12, claims to lead): order, reference height and honest verdicts unchanged; an alert names it', async (t) => {
  const rig = await makeRig(t, { n: 4, chain: { liar: 'v3' } });
  await chainReady(rig, 4);
  const f = await waitFor(
    async () => {
      const x = await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet');
      return x.alerts.some((a) => a.code === 'CHAIN_REPORT_CONTRADICTS' && /v3/.test(a.message)) ? x : null;
    },
    { what: 'an alert naming the liar', timeoutMs: 30_000, intervalMs: 250 },
  );
  t.ok((f.chain?.referenceHeight ?? 0) < 1e9, `the reference height ${f.chain?.referenceHeight} is a real one`);
  const r = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', { target: rig.fleet.artifact('1.1.0'), nodes: ['v0', 'v1', 'v2'] });
  const d = await rig.waitRollout(r.rollout.id);
  t.equal(d.rollout.state, 'completed', d.rollout.reason ?? '');
  t.ok(
    d.steps.every((s) => s.state === 'upgraded'),
    'every honest node upgraded',
  );
  const ev = await api<EventsBody>(rig.op, 'GET', `/api/v1/rollouts/${r.rollout.id}/events?after=0`);
  const dispatched = ev.events.filter((e) => e.type === 'node.dispatched');
  t.ok(
    dispatched.every((e) => Number(e.data.maxHeight) < 1e9),
    'no command carried the lie as its reference height',
  );
  t.ok(
    dispatched.every((e) => e.data.leader !== 'v3'),
    'the liar was never taken for the leader',
  );
});

t.test('an epoch change mid-rollout: the budget follows the new weights and an unsafe plan pauses', async (t) => {
  const rig = await makeRig(t, { n: 4 });
  await chainReady(rig, 4);
  const r = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', { target: rig.fleet.artifact('1.1.0'), nodes: ['v0', 'v1', 'v2', 'v3'] });
  await waitFor(
    async () => {
      const d = await api<RolloutDetailBody>(rig.op, 'GET', `/api/v1/rollouts/${r.rollout.id}`);
      return d.steps.some((s) => s.state === 'upgraded');
    },
    { what: 'a first node upgraded', timeoutMs: 90_000, intervalMs: 200 },
  );
  // Epoch 1: the last pending node becomes as heavy as the rest together; no slack can ever hold it.
  const d0 = await api<RolloutDetailBody>(rig.op, 'GET', `/api/v1/rollouts/${r.rollout.id}`);
  const last = [...d0.steps].reverse().find((s) => s.state === 'pending')!.nodeId;
  const weights = ['v0', 'v1', 'v2', 'v3'].map((id) => (id === last ? 5 : 1));
  await rig.fleet.setEpoch(1, weights);
  const d = await rig.waitRollout(r.rollout.id);
  t.equal(d.rollout.state, 'paused');
  t.equal(d.rollout.code, 'E_DISRUPTION_BUDGET');
  t.match(d.rollout.reason, new RegExp(`${last} \\(validator ${last}, weight 5\\).*epoch 1`));
  const f = await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet');
  t.equal(f.chain?.epoch, 1, 'the coordinator adopted the new epoch');
  t.equal(f.chain?.quorumWeight, 6, 'and counts its weights (total 8, quorum 6)');
});
