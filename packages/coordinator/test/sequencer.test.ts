import t from 'tap';
import { World, fleetOf, node, rolloutOf, stepsOf } from './helpers.js';
import { AGENT_LOST_MS } from '../src/sequencer.js';
import { planRollout } from '../src/planner.js';
import { SHA } from './helpers.js';

function ids(n: number) {
  return Array.from({ length: n }, (_, i) => `v${i}`);
}

/** Drives a rolling rollout to the end, completing each command; rotates the leader on every tick. */
function drive(w: World, opts: { rotate?: boolean; maxTicks?: number } = {}): string[] {
  const order: string[] = [];
  let rot = 0;
  for (let i = 0; i < (opts.maxTicks ?? 500); i++) {
    if (opts.rotate) {
      const healthy = [...w.fleet.nodes.values()].filter((n) => n.healthy).map((n) => n.id);
      w.setLeader(healthy[rot++ % healthy.length]!);
    }
    w.tick();
    for (const s of w.sent.splice(0)) {
      if (s.command === 'upgrade') {
        // leader must never be dispatched while another node is still pending
        order.push(s.nodeId);
      }
    }
    for (const id of w.inFlight()) w.finish(id);
    w.advance(100);
    if (['completed', 'failed', 'paused', 'rolled_back', 'aborted'].includes(w.rollout.state)) break;
  }
  return order;
}

for (const n of [4, 7]) {
  t.test(`rolling ${n} validators: completes, never exceeds f, leader last`, async (t) => {
    const w = new World(rolloutOf(ids(n)), stepsOf(ids(n)), fleetOf(n, 2));
    const f = Math.floor((n - 1) / 3);
    w.rollout.options.maxUnavailable = f;
    const order = drive(w);
    t.equal(w.rollout.state, 'completed');
    t.equal(order.length, n, 'every node upgraded once');
    t.equal(new Set(order).size, n, 'no node twice');
    t.equal(order[n - 1], 'v2', 'the leader goes last');
    t.ok(w.maxInFlightSeen <= f);
    t.ok(w.steps.every((s) => s.state === 'upgraded'));
  });
}

t.test('7 validators with one already unhealthy: budget shrinks to f-1', async (t) => {
  const w = new World(rolloutOf(ids(7), {}, { maxUnavailable: 2 }), stepsOf(ids(7)), fleetOf(7, 0));
  w.fleet.nodes.set('v6', node('v6', { healthy: false, health: 'down', ready: false }));
  w.tick();
  const up = w.sent.filter((s) => s.command === 'upgrade');
  t.equal(up.length, 1, 'only one more node may go down (f=2, one unhealthy)');
  t.not(up[0]!.nodeId, 'v0', 'not the leader');
  t.not(up[0]!.nodeId, 'v6', 'not the unhealthy node');
});

t.test('nodes in flight elsewhere (e.g. before a crash) count against f', async (t) => {
  const w = new World(rolloutOf(ids(4)), stepsOf(ids(4)), fleetOf(4, 0));
  w.busyElsewhere.add('v3');
  w.tick();
  t.equal(w.sent.length, 0, 'f=1 already used by v3');
  w.busyElsewhere.clear();
  w.tick();
  t.equal(w.sent.length, 1);
});

t.test('a step already in flight (persisted before a crash) blocks the next wave', async (t) => {
  const steps = stepsOf(ids(4));
  steps[1] = { ...steps[1]!, state: 'upgrading', commandId: 'r1.v1.upgrade.1', attempt: 1 };
  const w = new World(rolloutOf(ids(4)), steps, fleetOf(4, 0));
  w.commands.set('r1.v1.upgrade.1', {
    id: 'r1.v1.upgrade.1',
    nodeId: 'v1',
    rolloutId: 'r1',
    kind: 'upgrade',
    digest: '',
    body: '',
    state: 'sent',
    outcome: null,
    code: null,
    message: null,
    runningVersion: null,
    downtimeMs: null,
    stoppedAtView: null,
    createdAt: 0,
    updatedAt: 0,
  });
  w.tick();
  t.equal(w.sent.length, 0, 'nothing new while v1 has no result');
  w.finish('v1');
  const order = drive(w);
  t.equal(w.rollout.state, 'completed');
  t.notOk(order.includes('v1'), 'v1 is not upgraded twice');
});

t.test('leader goes last as leadership rotates', async (t) => {
  for (const n of [4, 7]) {
    const w = new World(rolloutOf(ids(n)), stepsOf(ids(n)), fleetOf(n, 0));
    const order: string[] = [];
    let rot = 0;
    for (let i = 0; i < 400 && w.rollout.state === 'running'; i++) {
      const healthy = [...w.fleet.nodes.values()].filter((x) => x.healthy).map((x) => x.id);
      w.setLeader(healthy[rot++ % healthy.length]!);
      const leaderNow = w.fleet.leader;
      const pendingBefore = w.steps.filter((s) => s.state === 'pending').length;
      w.tick();
      for (const s of w.sent.splice(0)) {
        if (s.command !== 'upgrade') continue;
        order.push(s.nodeId);
        if (pendingBefore > 1) t.not(s.nodeId, leaderNow, `${s.nodeId} was not the leader when dispatched`);
      }
      for (const id of w.inFlight()) w.finish(id);
      w.advance(10);
    }
    t.equal(w.rollout.state, 'completed', `n=${n} completes`);
    t.equal(order.length, n);
  }
});

t.test('waits for the node to sync and for the stabilization period', async (t) => {
  const w = new World(rolloutOf(ids(4), {}, { stabilizationMs: 1000 }), stepsOf(ids(4)), fleetOf(4, 0));
  w.tick();
  const first = w.sent.splice(0)[0]!.nodeId;
  w.finish(first);
  w.fleet.nodes.set(first, { ...w.fleet.nodes.get(first)!, finalizedHeight: 50 });
  w.tick();
  t.equal(w.steps.find((s) => s.nodeId === first)!.state, 'verifying', 'behind the fleet: not synced');
  t.equal(w.sent.length, 0);
  w.fleet.nodes.set(first, { ...w.fleet.nodes.get(first)!, finalizedHeight: 100 });
  w.tick();
  t.equal(w.steps.find((s) => s.nodeId === first)!.state, 'upgraded');
  t.equal(w.sent.length, 0, 'stabilizing');
  w.now += 1001;
  w.tick();
  t.equal(w.sent.length, 1, 'next node after stabilization');
});

t.test('a failed node pauses the rollout; autoRollback rolls back upgraded nodes', async (t) => {
  const w = new World(rolloutOf(ids(4)), stepsOf(ids(4)), fleetOf(4, 0));
  w.tick();
  const a = w.sent.splice(0)[0]!.nodeId;
  w.finish(a);
  w.tick();
  w.tick();
  const b = w.sent.splice(0)[0]!.nodeId;
  w.finish(b, 'rolled_back', 'E_HEALTH_TIMEOUT');
  w.tick();
  t.equal(w.rollout.state, 'paused');
  t.equal(w.rollout.code, 'E_NODE_FAILED');
  t.match(w.rollout.reason, `${b} (E_HEALTH_TIMEOUT)`, "the reason names the node and the agent's code");
  t.ok(w.events.some((e) => e.type === 'node.failed' && e.nodeId === b));

  const w2 = new World(rolloutOf(ids(4), {}, { autoRollback: true }), stepsOf(ids(4)), fleetOf(4, 0));
  w2.tick();
  const a2 = w2.sent.splice(0)[0]!.nodeId;
  w2.finish(a2);
  w2.tick();
  w2.tick();
  const b2 = w2.sent.splice(0)[0]!.nodeId;
  w2.finish(b2, 'rolled_back', 'E_HEALTH_TIMEOUT');
  w2.tick();
  t.equal(w2.rollout.state, 'rolling_back');
  w2.tick();
  const rb = w2.sent.splice(0);
  t.same(
    rb.map((s) => [s.nodeId, s.command]),
    [[a2, 'rollback']],
  );
  w2.finish(a2);
  w2.tick();
  t.equal(w2.rollout.state, 'rolled_back');
});

t.test('canary: soak passes then rolling continues; soak failure rolls the canary back', async (t) => {
  const w = new World(rolloutOf(ids(4), { strategy: 'canary' }, { canary: 'v3', soakMs: 500 }), stepsOf(ids(4)), fleetOf(4, 0));
  w.tick();
  t.same(
    w.sent.splice(0).map((s) => s.nodeId),
    ['v3'],
    'only the canary first',
  );
  w.finish('v3');
  w.tick();
  w.tick();
  t.equal(w.rollout.state, 'soaking');
  w.advance(200);
  w.tick();
  t.equal(w.rollout.state, 'soaking');
  w.advance(400);
  w.tick();
  t.equal(w.rollout.state, 'running');
  const order = drive(w);
  t.equal(w.rollout.state, 'completed');
  t.equal(order.length, 3);

  const w2 = new World(rolloutOf(ids(4), { strategy: 'canary' }, { canary: 'v1', soakMs: 500 }), stepsOf(ids(4)), fleetOf(4, 0));
  w2.tick();
  w2.sent.splice(0);
  w2.finish('v1');
  w2.tick();
  w2.tick();
  t.equal(w2.rollout.state, 'soaking');
  w2.fleet.nodes.set('v1', { ...w2.fleet.nodes.get('v1')!, healthy: false, health: 'down' });
  w2.tick();
  t.equal(w2.rollout.state, 'rolling_back');
  t.equal(w2.rollout.code, 'E_CANARY_FAILED');
  w2.fleet.nodes.set('v1', { ...w2.fleet.nodes.get('v1')!, healthy: true, health: 'up' });
  w2.tick();
  t.same(
    w2.sent.splice(0).map((s) => [s.nodeId, s.command]),
    [['v1', 'rollback']],
  );
  w2.finish('v1');
  w2.tick();
  t.equal(w2.rollout.state, 'rolled_back');

  // a canary whose upgrade fails (bad build) fails the rollout; its agent rolled it back
  const w3 = new World(rolloutOf(ids(4), { strategy: 'canary' }, { canary: 'v1' }), stepsOf(ids(4)), fleetOf(4, 0));
  w3.tick();
  w3.finish('v1', 'rolled_back', 'E_START');
  w3.tick();
  t.equal(w3.rollout.state, 'failed');
  t.equal(w3.rollout.code, 'E_CANARY_FAILED');
  t.equal(w3.sent.filter((s) => s.command === 'upgrade').length, 1, 'no other node touched');
});

t.test('halt: gated by approval and window, prepare everywhere, then all together', async (t) => {
  const w = new World(
    rolloutOf(
      ids(4),
      { strategy: 'halt', state: 'planned', pathKind: 'major', target: { version: '2.0.0', url: 'http://x/b.tgz', sha256: SHA } },
      { window: 'sun', requireApproval: true },
    ),
    stepsOf(ids(4)),
    fleetOf(4, 0),
  );
  w.windowOpen = false;
  w.tick();
  t.equal(w.rollout.state, 'awaiting_approval');
  w.rollout.data.approvedAt = w.now;
  w.tick();
  t.equal(w.rollout.state, 'scheduled', 'approved but the window is closed');
  w.tick();
  t.equal(w.sent.length, 0);
  w.windowOpen = true;
  w.tick();
  t.equal(w.rollout.state, 'running');
  w.tick();
  t.same(
    w.sent.map((s) => s.command),
    ['prepare', 'prepare', 'prepare', 'prepare'],
  );
  w.sent.splice(0);
  for (const id of ids(4)) w.finish(id);
  w.tick();
  t.same(
    w.sent.map((s) => s.command),
    ['upgrade', 'upgrade', 'upgrade', 'upgrade'],
  );
  t.ok(w.sent.every((s) => s.options?.requireStaged && s.options.approvedMajor));
  w.sent.splice(0);
  for (const id of ids(4)) w.finish(id);
  w.tick();
  t.equal(w.rollout.state, 'running', 'waits for the chain to finalize past the halt height');
  w.advance(100);
  w.tick();
  w.tick();
  t.equal(w.rollout.state, 'completed');
});

t.test('halt: window closed after staging pauses before any downtime', async (t) => {
  const w = new World(rolloutOf(ids(4), { strategy: 'halt', pathKind: 'major' }, { window: 'sun' }), stepsOf(ids(4)), fleetOf(4, 0));
  w.tick();
  w.sent.splice(0);
  for (const id of ids(4)) w.finish(id);
  w.windowOpen = false;
  w.tick();
  t.equal(w.rollout.state, 'paused');
  t.equal(w.rollout.code, 'E_WINDOW_CLOSED');
  t.equal(w.sent.length, 0);
});

t.test('planner: waves, leader last, budget and path errors', async (t) => {
  const fleet = fleetOf(7, 3);
  const opts = rolloutOf([]).options;
  const p = planRollout(
    { target: { version: '1.1.0', url: 'http://x/a', sha256: SHA }, strategy: 'rolling', options: { ...opts, maxUnavailable: 2 } },
    fleet,
    [],
    0,
  );
  t.same(p.waves, [['v0', 'v1'], ['v2', 'v4'], ['v5', 'v6'], ['v3']]);
  t.equal(p.idealWaves, 4);
  t.throws(
    () =>
      planRollout({ target: { version: '1.1.0', url: 'http://x/a', sha256: SHA }, strategy: 'rolling', options: { ...opts, maxUnavailable: 3 } }, fleet, [], 0),
    { code: 'E_DISRUPTION_BUDGET' },
  );
  t.throws(() => planRollout({ target: { version: '2.0.0', url: 'http://x/a', sha256: SHA }, strategy: 'rolling', options: opts }, fleet, [], 0), {
    code: 'E_MAJOR_NOT_APPROVED',
  });
  t.throws(() => planRollout({ target: { version: '3.0.0', url: 'http://x/a', sha256: SHA }, strategy: 'halt', options: opts }, fleet, [], 0), {
    code: 'E_UNSUPPORTED_PATH',
  });
  t.throws(() => planRollout({ target: { version: '2.0.0', url: 'http://x/a', sha256: SHA }, strategy: 'halt', options: opts }, fleet, [], 0), {
    code: 'E_MAJOR_NOT_APPROVED',
  });
  const halt = planRollout(
    { target: { version: '2.0.0', url: 'http://x/a', sha256: SHA }, strategy: 'halt', options: { ...opts, window: 'w' } },
    fleet,
    [{ name: 'w', cron: '0 2 * * 0', durationMs: 3_600_000 }],
    0,
  );
  t.ok(halt.requiresApproval);
  t.equal(halt.waves.length, 1);
  const c = planRollout({ target: { version: '1.1.0', url: 'http://x/a', sha256: SHA }, strategy: 'canary', options: opts }, fleetOf(4, 0), [], 0);
  t.same(c.waves, [['v1'], ['v2'], ['v3'], ['v0']]);
});

t.test('an agent lost mid-step is reported once (E_AGENT_LOST), and its return once; nothing else moves', async (t) => {
  const w = new World(rolloutOf(['v0', 'v1', 'v2', 'v3']), stepsOf(['v0', 'v1', 'v2', 'v3']), fleetOf(4, 3));
  w.tick();
  const id = w.inFlight()[0]!;
  const node = w.fleet.nodes.get(id)!;
  w.fleet.nodes.set(id, { ...node, connected: false, agent: 'unreachable', lastSeenAt: w.now });
  w.advance(AGENT_LOST_MS - 1000);
  w.tick();
  t.notOk(
    w.events.some((e) => e.type === 'node.agent_lost'),
    'not before AGENT_LOST_MS',
  );
  w.advance(2000);
  w.tick();
  w.advance(5000);
  w.tick();
  const lost = w.events.filter((e) => e.type === 'node.agent_lost');
  t.equal(lost.length, 1, 'said once');
  t.match(lost[0], { nodeId: id, data: { code: 'E_AGENT_LOST', step: 'upgrading', message: /has not reported for 3\d s during upgrading/ } });
  t.same(w.rollout.data.lostAgents, [id]);
  t.same(w.inFlight(), [id], 'still in flight: nobody else dispatched');
  t.equal(w.rollout.state, 'running');
  w.fleet.nodes.set(id, { ...w.fleet.nodes.get(id)!, connected: true, agent: 'connected', lastSeenAt: w.now });
  w.tick();
  w.tick();
  t.equal(w.events.filter((e) => e.type === 'node.agent_back' && e.nodeId === id).length, 1, 'its return said once');
  t.same(w.rollout.data.lostAgents, []);
});
