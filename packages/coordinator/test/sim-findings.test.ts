/** Regressions for what the simulation (npm run sim) found in the sequencer. */
import t from 'tap';
import type { ChainValidatorView, ChainView } from '../src/engine/chain-view.js';
import type { Step } from '../src/model.js';
import { fleetOf, rolloutOf, stepsOf, World } from './helpers.js';

t.test('a resumed canary rollout whose canary failed fails instead of waiting forever (npm run sim, seed 616)', async (t) => {
  const ids = ['v0', 'v1', 'v2', 'v3'];
  const w = new World(rolloutOf(ids, { strategy: 'canary', data: { handledFailures: ['v0'] } }, { canary: 'v0' }), stepsOf(ids), fleetOf(4, 1));
  w.steps[0] = { ...w.steps[0]!, state: 'failed', code: 'E_HEALTH_TIMEOUT', finishedAt: 1 };
  w.tick();
  t.equal(w.rollout.state, 'failed');
  t.equal(w.rollout.code, 'E_CANARY_FAILED');
  t.match(w.rollout.reason, /canary v0 failed its upgrade/);
  t.same(w.sent, [], 'nothing else was dispatched');
});

// ---------------------------------------------------------------- the weighted chain findings

interface Val {
  node: string | null;
  weight: number;
  live?: boolean;
  verdict?: string;
  provenView?: number | null;
  provenAt?: number | null;
}

/** A chain view as the tracker would give it: an adopted set, the validators' verdicts as written. */
function chainOf(vals: Val[], quorumWeight: number): ChainView {
  const validators: ChainValidatorView[] = vals.map((v, i) => ({
    name: `val${i}`,
    pubkey: `${i + 10}aa`,
    weight: v.weight,
    active: true,
    managedBy: v.node,
    live: v.live ?? true,
    verdict: v.verdict ?? (v.live === false ? 'skipped' : 'produced'),
    evidence: v.live === false ? 'skipped its leader view' : 'produced a block',
    provenAt: v.provenAt ?? 0,
    provenView: v.provenView ?? 0,
  }));
  const total = vals.reduce((s, v) => s + v.weight, 0);
  const live = validators.filter((v) => v.live).reduce((s, v) => s + v.weight, 0);
  return {
    status: 'adopted',
    epoch: 1,
    totalWeight: total,
    quorumWeight,
    largestSlack: total - quorumWeight,
    slack: live - quorumWeight,
    validators,
    byNode: new Map(validators.filter((v) => v.managedBy).map((v) => [v.managedBy!, v])),
    reportersNeeded: 1,
    agreedView: 100,
    leaderPubkey: null,
    referenceHeight: 100,
    alerts: [],
    margin: 0,
    requireProducedBlock: true,
  };
}

/** A rollout rolling back over these nodes, with the chain given, no leader among them. */
function rollingBack(ids: string[], chain: ChainView): World {
  const fleet = fleetOf(ids.length, 0);
  fleet.leader = null;
  fleet.chain = chain;
  const w = new World(rolloutOf(ids, { state: 'rolling_back', code: 'E_NODE_FAILED', reason: 'a node failed' }, { autoRollback: true }), stepsOf(ids), fleet);
  for (const id of ids) w.fleet.nodes.set(id, { ...w.fleet.nodes.get(id)!, isLeader: false });
  return w;
}

/** A step that went through an upgrade (by a command with the given stoppedAtView), in the given state. */
function upgradedStep(w: World, nodeId: string, state: Step['state'], stoppedAtView: number | null, extra: Partial<Step> = {}): void {
  const i = w.steps.findIndex((s) => s.nodeId === nodeId);
  const commandId = `r1.${nodeId}.upgrade.1`;
  w.commands.set(commandId, {
    id: commandId,
    nodeId,
    rolloutId: 'r1',
    kind: 'upgrade',
    digest: '',
    body: '',
    state: 'completed',
    outcome: 'succeeded',
    code: null,
    message: null,
    runningVersion: '1.1.0',
    downtimeMs: 50,
    stoppedAtView,
    createdAt: 0,
    updatedAt: 0,
  });
  w.steps[i] = { ...w.steps[i]!, state, commandId, attempt: 1, fromVersion: '1.0.0', dispatchSeq: i + 1, resultAt: 0, finishedAt: w.now - 10_000, ...extra };
  w.fleet.nodes.set(nodeId, { ...w.fleet.nodes.get(nodeId)!, version: '1.1.0' });
}

t.test(
  'a node is back on the chain only after producing in a view later than its stop, however late the block was believed (npm run sim, seeds 117, 162, 168)',
  async (t) => {
    // v0 was rolled back; the block that "proves" it live is from view 40, before its rollback
    // stopped it at view 50, but the coordinator believed that block only now (provenAt is late).
    const chain = chainOf(
      [
        { node: 'v0', weight: 1, provenView: 40, provenAt: 2_000_000 },
        { node: 'v1', weight: 1 },
        { node: 'v2', weight: 1 },
        { node: 'v3', weight: 1 },
      ],
      3,
    );
    const w = rollingBack(['v0', 'v1', 'v2', 'v3'], chain);
    upgradedStep(w, 'v1', 'upgraded', 60);
    const i = w.steps.findIndex((s) => s.nodeId === 'v0');
    w.steps[i] = { ...w.steps[i]!, state: 'rolled_back', commandId: 'r1.v0.rollback.2', fromVersion: '1.0.0', finishedAt: w.now - 5_000 };
    w.commands.set('r1.v0.rollback.2', { ...w.commands.get('r1.v1.upgrade.1')!, id: 'r1.v0.rollback.2', nodeId: 'v0', kind: 'rollback', stoppedAtView: 50 });
    w.tick();
    t.same(w.sent, [], 'v1 waits: v0 counts as down until the chain shows it after view 50');
    t.match(w.rollout.data.waiting, /network slack 0 < needed 1/, 'and the rollout says why');
    chain.byNode.get('v0')!.provenView = 55;
    w.tick();
    t.same(
      w.sent.map((s) => [s.nodeId, s.command]),
      [['v1', 'rollback']],
      'a block of view 55 proves v0 back: v1 is rolled back',
    );
  },
);

t.test('a rollback whose every node left is heavier than any slack pauses with the reason, and resuming rolls back again (npm run sim, seed 5)', async (t) => {
  // Weights 5,1,1,1 (quorum 6, largest slack 2): v0 was upgraded under an earlier epoch.
  const chain = chainOf(
    [
      { node: 'v0', weight: 5 },
      { node: 'v1', weight: 1 },
      { node: 'v2', weight: 1 },
      { node: 'v3', weight: 1 },
    ],
    6,
  );
  const w = rollingBack(['v0', 'v1', 'v2', 'v3'], chain);
  upgradedStep(w, 'v0', 'upgraded', 10);
  w.tick();
  t.same(w.sent, [], 'nothing is sent: taking v0 down would stop the chain');
  t.equal(w.rollout.state, 'paused');
  t.equal(w.rollout.code, 'E_DISRUPTION_BUDGET');
  t.match(w.rollout.reason, /v0 \(validator val0, weight 5\) can never be taken down.*largest slack of epoch 1 is 2.*guts-upgrade-agent rollback on its host/);
  t.equal(w.rollout.data.pausedFrom, 'rolling_back', 'a resume knows to go on rolling back');
  // The operator rolls v0 back by hand on its host; it reports 1.0.0 again; the rollout resumes.
  w.fleet.nodes.set('v0', { ...w.fleet.nodes.get('v0')!, version: '1.0.0' });
  w.rollout = { ...w.rollout, state: 'rolling_back', data: { ...w.rollout.data, pausedFrom: null } };
  w.tick();
  t.same(w.sent, [], 'still nothing sent: the node is undone already');
  t.equal(w.steps.find((s) => s.nodeId === 'v0')!.state, 'rolled_back', 'v0 counts as rolled back by hand');
  t.equal(w.rollout.state, 'rolled_back');
  t.ok(w.events.some((e) => e.type === 'node.rolled_back' && e.data?.by === 'hand'));
});

t.test(
  'a node failed for not syncing back still runs the target: the rollback undoes it first, at no cost to the slack (npm run sim, seed 2417)',
  async (t) => {
    // Weights 1 each plus one unmanaged (quorum 4). v2 upgraded but never came back on the chain
    // (E_SYNC_TIMEOUT); with it down the slack is 0, so v0 cannot go, but v2 is down already.
    const chain = chainOf(
      [
        { node: 'v0', weight: 1 },
        { node: 'v1', weight: 1 },
        { node: 'v2', weight: 1, live: false },
        { node: 'v3', weight: 1 },
        { node: null, weight: 1 },
      ],
      4,
    );
    const w = rollingBack(['v0', 'v1', 'v2', 'v3'], chain);
    w.fleet.n = 5;
    upgradedStep(w, 'v0', 'upgraded', 10);
    upgradedStep(w, 'v2', 'failed', 30, { code: 'E_SYNC_TIMEOUT' });
    w.tick();
    t.same(
      w.sent.map((s) => [s.nodeId, s.command]),
      [['v2', 'rollback']],
      'v2 goes back first; v0 waits',
    );
    w.finish('v2');
    w.tick();
    t.equal(w.steps.find((s) => s.nodeId === 'v2')!.state, 'rolled_back');
    t.equal(w.sent.length, 1, 'v0 still waits: v2 is not back on the chain');
    t.match(w.rollout.data.waiting, /network slack 0 < needed 1: 1 validator\(s\) not proven live \(0 unmanaged\): val2 \(v2\)/, 'and says why');
    w.advance(100);
    Object.assign(chain.byNode.get('v2')!, { live: true, verdict: 'produced', evidence: 'produced a block', provenView: 200, provenAt: w.now });
    w.tick();
    t.same(
      w.sent.map((s) => [s.nodeId, s.command]),
      [
        ['v2', 'rollback'],
        ['v0', 'rollback'],
      ],
      'once v2 is back, v0',
    );
    t.equal(w.rollout.data.waiting, null, 'no longer waiting');
  },
);
