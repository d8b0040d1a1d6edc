/**
 * The weighted budget, the slack gate and the lying-agent rules, on the real
 * sequencer and the real ChainTracker, against a small model of the chain
 * (leader of view v = index v mod k among the active validators; a view whose
 * leader is down has no block; blocks finalize only while quorum weight is up).
 */
import t from 'tap';
import { type ChainValidator, type FinalizedBlock, activeWeight, leaderOfView, quorumWeightFor } from '@guts-upgrade/protocol';
import { ChainTracker, setDigest } from '../src/engine/chain-view.js';
import type { FleetView, NodeView } from '../src/model.js';
import { planRollout } from '../src/planner.js';
import { World, node, rolloutOf, stepsOf } from './helpers.js';

interface SimValidator extends ChainValidator {
  /** The managed node running it, or null for another operator's validator. */
  node: string | null;
  /** Whether an unmanaged validator runs (a managed one runs when its node is healthy). */
  up: boolean;
}

/** The chain model plus the agents' reports, feeding a real ChainTracker. */
class ChainModel {
  view = 0;
  blocks: FinalizedBlock[] = [];
  epoch = 0;
  readonly tracker = new ChainTracker();
  /** Node ids whose agent lies: height 10^12, view 10^9, claims to lead. */
  readonly liars = new Set<string>();

  constructor(
    public validators: SimValidator[],
    readonly fleet: FleetView,
  ) {}

  private isUp(v: SimValidator): boolean {
    return v.node ? !!this.fleet.nodes.get(v.node)?.healthy : v.up;
  }

  upWeight(): number {
    return this.validators.filter((v) => v.active && this.isUp(v)).reduce((s, v) => s + v.weight, 0);
  }

  quorum(): number {
    return quorumWeightFor(activeWeight(this.validators));
  }

  /** One view: its leader proposes if up, and the block finalizes if quorum weight is up. */
  step(): void {
    const leader = leaderOfView(this.view, this.validators) as SimValidator;
    if (this.isUp(leader) && this.upWeight() >= this.quorum()) {
      const height = (this.blocks.at(-1)?.height ?? 0) + 1;
      this.blocks.push({ height, blockId: `b${height}`, view: this.view, producer: leader.pubkey, signatureCount: null });
    }
    this.view++;
  }

  /** Every healthy managed node reports; then the fleet view is recomputed as the coordinator would. */
  report(now: number): void {
    const set = {
      epoch: this.epoch,
      totalWeight: activeWeight(this.validators),
      quorumWeight: this.quorum(),
      validators: this.validators.map(({ name, pubkey, weight, active }) => ({ name, pubkey, weight, active })),
    };
    const height = this.blocks.at(-1)?.height ?? 0;
    for (const [id, n] of this.fleet.nodes) {
      if (!n.healthy) continue;
      const lying = this.liars.has(id);
      const self = this.validators.find((v) => v.node === id);
      this.fleet.nodes.set(id, {
        ...n,
        finalizedHeight: lying ? 1e12 : height,
        view: lying ? 1e9 : this.view,
        isLeader: lying || leaderOfView(this.view, this.validators)?.pubkey === self?.pubkey,
        currentLeader: lying ? (self?.pubkey ?? null) : (leaderOfView(this.view, this.validators)?.pubkey ?? null),
      });
      this.tracker.observe(id, { validators: set, blocks: this.blocks.slice(-10) }, now);
    }
    const bindings = new Map(this.validators.filter((v) => v.node).map((v) => [v.node as string, v.pubkey]));
    const cv = this.tracker.view({ nodes: this.fleet.nodes, bindings, now });
    this.fleet.chain = cv;
    if (cv) {
      this.fleet.n = cv.validators.length || this.fleet.n;
      this.fleet.maxHeight = cv.referenceHeight;
      this.fleet.leader = cv.validators.find((v) => v.pubkey === cv.leaderPubkey)?.managedBy ?? null;
    }
  }
}

function setup(weights: number[], managed: number, opts: { maxUnavailable?: number } = {}) {
  const validators: SimValidator[] = weights.map((weight, i) => ({
    name: `val${i}`,
    pubkey: `${(i + 10).toString(16).padStart(2, '0')}aa`,
    weight,
    active: true,
    node: i < managed ? `v${i}` : null,
    up: true,
  }));
  const nodes = new Map<string, NodeView>();
  for (let i = 0; i < managed; i++) nodes.set(`v${i}`, node(`v${i}`));
  const fleet: FleetView = { n: weights.length, nodes, leader: null, maxHeight: 0, chain: null };
  const chain = new ChainModel(validators, fleet);
  const ids = [...nodes.keys()];
  const w = new World(rolloutOf(ids, {}, { maxUnavailable: opts.maxUnavailable ?? 1 }), stepsOf(ids), fleet);
  return { chain, w, fleet, validators };
}

/** Runs the chain and the rollout together; checks the weight up never falls below the quorum. */
function run(chain: ChainModel, w: World, opts: { ticks?: number; onTick?: (i: number) => void } = {}) {
  let minUp = Infinity;
  const together: string[][] = [];
  for (let i = 0; i < (opts.ticks ?? 3000); i++) {
    opts.onTick?.(i);
    chain.step();
    chain.report(w.now);
    w.tick();
    minUp = Math.min(minUp, chain.upWeight());
    const down = w.steps.filter((s) => s.state === 'upgrading').map((s) => s.nodeId);
    if (down.length > 0) together.push(down);
    // An agent takes a few views to upgrade: finish the commands sent 3 views ago.
    for (const s of w.steps) if (s.state === 'upgrading' && s.startedAt != null && w.now - s.startedAt >= 300) w.finish(s.nodeId);
    w.advance(100);
    if (['completed', 'failed', 'paused'].includes(w.rollout.state)) break;
  }
  return { minUp, together };
}

t.test('weights 4,1,1,1,1,1,1,1,1,1: the heavy validator goes down only alone, never below quorum 9', async (t) => {
  const { chain, w } = setup([4, 1, 1, 1, 1, 1, 1, 1, 1, 1], 10, { maxUnavailable: 3 });
  const { minUp, together } = run(chain, w);
  t.equal(w.rollout.state, 'completed', w.rollout.reason ?? '');
  t.equal(chain.quorum(), 9);
  t.ok(minUp >= 9, `weight up never below the quorum (lowest ${minUp})`);
  const withHeavy = together.filter((d) => d.includes('v0'));
  t.ok(withHeavy.length > 0, 'the heavy validator was upgraded');
  t.ok(
    withHeavy.every((d) => d.length === 1),
    'and always alone',
  );
  t.ok(
    together.some((d) => d.length === 3),
    'light validators went three at a time (3 ≤ slack 4)',
  );
});

t.test('weights 5,1,1,1: a plan that needs the heavy validator down is refused, naming it', async (t) => {
  const { chain, w, fleet } = setup([5, 1, 1, 1], 4);
  for (let i = 0; i < 12; i++) {
    chain.step();
    chain.report(w.now);
  }
  t.equal(fleet.chain?.status, 'adopted');
  t.equal(fleet.chain?.largestSlack, 2, 'total 8, quorum 6');
  t.throws(() => planRollout({ target: w.rollout.target, strategy: 'rolling', options: w.rollout.options }, fleet, [], 0), {
    code: 'E_DISRUPTION_BUDGET',
    message: /v0 \(validator val0, weight 5\).*halt strategy/,
  });
  const light = planRollout(
    { target: w.rollout.target, strategy: 'rolling', nodes: ['v1', 'v2', 'v3'], options: { ...w.rollout.options, maxUnavailable: 1 } },
    fleet,
    [],
    0,
  );
  t.same(
    light.chain?.waveWeights,
    light.waves.map(() => 1),
    'the dry run shows the weight of each wave',
  );
  t.ok(planRollout({ target: w.rollout.target, strategy: 'halt', options: { ...w.rollout.options, window: null } }, fleet, [], 0), 'halt is allowed');
});

t.test('ten validators of weight 1, four managed, three unmanaged stopped: waits and says why, then finishes', async (t) => {
  const { chain, w, validators } = setup(Array(10).fill(1), 4);
  for (const v of validators.slice(7)) v.up = false;
  let waited: string | null = null;
  const { minUp } = run(chain, w, {
    onTick: (i) => {
      if (i === 200) {
        waited = w.rollout.data.waiting ?? null;
        t.equal(w.sent.length, 0, 'nothing dispatched while the slack is 0');
        for (const v of validators.slice(7)) v.up = true;
      }
    },
  });
  t.match(waited, /network slack 0 < needed 1: 3 validator\(s\) not proven live \(3 unmanaged\)/);
  t.ok(
    w.events.some((e) => e.type === 'rollout.waiting'),
    'an event says so',
  );
  t.equal(w.rollout.state, 'completed');
  t.ok(minUp >= 7, `never below quorum weight 7 (lowest ${minUp})`);
});

t.test('a lying agent changes neither the reference height, nor the leader, nor the order; an alert names it', async (t) => {
  const { chain, w, fleet } = setup([1, 1, 1, 1, 1, 1, 1], 7, { maxUnavailable: 1 });
  chain.liars.add('v6');
  // 19 views: the real leader of view 19 is v5, so the liar's claim to lead is false.
  for (let i = 0; i < 19; i++) {
    chain.step();
    chain.report(w.now);
  }
  t.ok((fleet.maxHeight ?? 0) <= chain.blocks.length, `reference height ${fleet.maxHeight} is a real height`);
  t.not(fleet.leader, 'v6', 'the liar is not believed to lead');
  t.equal(fleet.chain?.agreedView, chain.view, 'the view f + 1 honest reports reach');
  t.equal(fleet.leader, `v${chain.view % 7}`, "the leader by the chain's rule over that view");
  const alert = fleet.chain?.alerts.find((a) => a.code === 'CHAIN_REPORT_CONTRADICTS');
  t.equal(alert?.nodeId, 'v6');
  w.tick();
  const first = w.sent[0];
  t.ok(first && first.options?.referenceHeight != null && first.options.referenceHeight <= chain.blocks.length, 'commands carry a real reference height');
});

t.test('an epoch change that makes a pending node too heavy pauses the rollout with the reason', async (t) => {
  const { chain, w, validators } = setup([1, 1, 1, 1], 4);
  const { minUp } = run(chain, w, {
    ticks: 400,
    onTick: (i) => {
      if (i === 5) {
        chain.epoch = 1;
        validators[3]!.weight = 5;
      }
    },
  });
  t.equal(w.rollout.state, 'paused');
  t.equal(w.rollout.code, 'E_DISRUPTION_BUDGET');
  t.match(w.rollout.reason, /v3 \(validator val3, weight 5\).*epoch 1/);
  t.ok(minUp >= 3);
});

t.test('disagreeing sets stop dispatch; too few managed reporters need an operator confirmation', async (t) => {
  const { chain, w, fleet } = setup(Array(10).fill(1), 2);
  for (let i = 0; i < 12; i++) {
    chain.step();
    chain.report(w.now);
  }
  t.equal(fleet.chain?.status, 'unconfirmed', 'two managed reporters are fewer than f + 1 = 4');
  t.match(fleet.chain?.alerts[0]?.message, /guts-upgrade chain confirm [0-9a-f]{16}/);
  w.tick();
  t.equal(w.sent.length, 0, 'nothing dispatched on an unconfirmed set');
  const [digest] = [...chain.tracker.reportedDigests().keys()];
  t.ok(chain.tracker.confirm(digest!), 'the operator confirms the reported set');
  chain.report(w.now);
  t.equal(fleet.chain?.status, 'adopted');

  const four = setup([1, 1, 1, 1], 4);
  for (let i = 0; i < 12; i++) {
    four.chain.step();
    four.chain.report(four.w.now);
  }
  t.equal(four.fleet.chain?.status, 'adopted');
  // One node reports another set: an alert, and the gate waits.
  const other = {
    epoch: 9,
    totalWeight: 4,
    quorumWeight: 3,
    validators: four.validators.map(({ name, pubkey, active }) => ({ name, pubkey, weight: 1, active })),
  };
  four.chain.tracker.observe('v1', { validators: other, blocks: [] }, four.w.now);
  four.fleet.chain = four.chain.tracker.view({
    nodes: four.fleet.nodes,
    bindings: new Map(four.validators.map((v) => [v.node as string, v.pubkey])),
    now: four.w.now,
  });
  t.equal(four.fleet.chain?.status, 'disagreement');
  t.match(four.fleet.chain?.alerts.find((a) => a.code === 'CHAIN_SET_DISAGREEMENT')?.message, /v1/);
  four.w.tick();
  t.equal(four.w.sent.length, 0);
  t.match(four.w.rollout.data.waiting, /not believed/);
  t.equal(setDigest(other).length, 16);
});

t.test('an upgraded node is back only once the chain shows it producing in its own leader view', async (t) => {
  const { chain, w } = setup([1, 1, 1, 1], 4);
  for (let i = 0; i < 12; i++) {
    chain.step();
    chain.report(w.now);
  }
  w.tick();
  const first = w.sent[0]!.nodeId;
  w.finish(first);
  w.advance(100);
  chain.report(w.now);
  w.tick();
  t.equal(w.steps.find((s) => s.nodeId === first)?.state, 'verifying', 'healthy on the target, but the chain has not shown it yet');
  for (let i = 0; i < 8 && w.steps.find((s) => s.nodeId === first)?.state === 'verifying'; i++) {
    chain.step();
    w.advance(100);
    chain.report(w.now);
    w.tick();
  }
  t.equal(w.steps.find((s) => s.nodeId === first)?.state, 'upgraded', 'upgraded after its next leader view produced a block');
});

t.test('rolling back: a node rolled back counts down until the chain shows it producing again (npm run sim, seed 7)', async (t) => {
  const { chain, w } = setup([1, 1, 1, 1], 4);
  for (let i = 0; i < 12; i++) {
    chain.step();
    chain.report(w.now);
    w.advance(100);
  }
  // v1 was rolled back just now (its old blocks prove nothing about it since); v2 is next to undo.
  w.rollout = { ...w.rollout, state: 'rolling_back' };
  w.steps = w.steps.map((s) => {
    if (s.nodeId === 'v1') return { ...s, state: 'rolled_back', dispatchSeq: 1, finishedAt: w.now };
    if (s.nodeId === 'v2') return { ...s, state: 'upgraded', dispatchSeq: 2, fromVersion: '1.0.0' };
    return s;
  });
  // v2 runs the target (a node reporting its old version again was undone by hand).
  w.fleet.nodes.set('v2', { ...w.fleet.nodes.get('v2')!, version: '1.1.0' });
  w.advance(1);
  chain.report(w.now);
  w.tick();
  t.same(
    w.sent.map((a) => a.nodeId),
    [],
    'v2 waits while v1 is not shown back on the chain',
  );
  for (let i = 0; i < 8 && w.sent.length === 0; i++) {
    chain.step();
    w.advance(100);
    chain.report(w.now);
    w.tick();
  }
  t.same(
    w.sent.map((a) => `${a.command} ${a.nodeId}`),
    ['rollback v2'],
    'v2 goes once v1 produced a block in its own leader view',
  );
});

t.test('rolling back: a node the bad build broke is rolled back even when the slack is gone (npm run sim, seed 73)', async (t) => {
  const { chain, w, fleet } = setup([1, 1, 1, 1], 4);
  for (let i = 0; i < 12; i++) {
    chain.step();
    chain.report(w.now);
    w.advance(100);
  }
  w.rollout = { ...w.rollout, state: 'rolling_back' };
  w.steps = w.steps.map((s) => (s.nodeId === 'v2' ? { ...s, state: 'upgraded', dispatchSeq: 1, fromVersion: '1.0.0' } : s));
  fleet.nodes.set('v2', { ...fleet.nodes.get('v2')!, version: '1.1.0' });
  // The new build degrades on v2, and v3 crashes: the chain is below its quorum (outside faults
  // beyond f on purpose, so the world's own count check is off).
  w.checkBudget = () => {};
  for (const id of ['v2', 'v3']) fleet.nodes.set(id, { ...fleet.nodes.get(id)!, healthy: false, health: 'down', ready: false });
  for (let i = 0; i < 8; i++) {
    chain.step();
    w.advance(100);
    chain.report(w.now);
  }
  w.tick();
  t.same(
    w.sent.map((a) => `${a.command} ${a.nodeId}`),
    ['rollback v2'],
    'rolling v2 back takes nothing more down: it is what brings its weight back',
  );
});
