/**
 * Node roles: followers (full nodes outside the validator set) are registered as
 * such, stored with a migration, cross-checked against their agent's config and
 * against the chain, and upgraded outside the safety budget: they never spend
 * slack, never need a binding to a chain validator, and go first.
 *
 * The budget cases run the real sequencer and the real ChainTracker against a
 * small model of the chain; the registration, hello and rollout cases run a real
 * coordinator (SQLite file, loopback port) with protocol-level fake agents.
 */
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { type ChainValidator, type FinalizedBlock, activeWeight, leaderOfView, quorumWeightFor } from '@guts-upgrade/protocol';
import { waitFor } from '@guts-upgrade/simulator';
import { EXIT } from '../src/cli.js';
import { api } from '../src/client.js';
import type { FleetBody, NodeListBody, NodeRegisteredBody, RolloutDetailBody } from '../src/client.js';
import { MIGRATIONS, Store } from '../src/db.js';
import { ChainTracker } from '../src/engine/chain-view.js';
import type { FleetView, NodeView } from '../src/model.js';
import { planRollout } from '../src/planner.js';
import { disruption } from '../src/sequencer.js';
import { FakeAgent, type Shared } from './fake-agent.js';
import { World, fleetOf, node, rolloutOf, stepsOf } from './helpers.js';
import { failure, liveCoordinator } from './live.js';
import { cli } from './run-cli.js';

const OP = 'operator-token-0123456789';
const keyOf = (i: number) => `${(i + 10).toString(16).padStart(2, '0')}aa`;

t.test('migration: an existing database gets the role column, every node a validator', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'guc-role-mig-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'old.db');
  // The database as the coordinator before roles left it (migrations up to 5), with a node in it.
  const s0 = Object.create(Store.prototype) as Store;
  (s0 as { db: unknown }).db = new Database(file);
  const before = MIGRATIONS.filter((m) => m.version < 6);
  t.same(
    s0.migrate(before),
    before.map((m) => m.version),
  );
  s0.db.prepare("INSERT INTO nodes (id, token_hash, created_at, pubkey) VALUES ('v0', 'x', 1, 'aa')").run();
  s0.close();
  const s = new Store(file);
  t.teardown(() => s.close());
  t.equal(s.schemaVersion(), MIGRATIONS.at(-1)!.version, 'migrated');
  t.same(
    s.activeNodes().map((n) => [n.id, n.role, n.pubkey]),
    [['v0', 'validator', 'aa']],
    'the node is kept, as a validator',
  );
  s.insertNode('f0', 'y', null, 2, null, 'follower');
  t.equal(s.node('f0')?.role, 'follower', 'a follower is stored as one');
});

t.test('disruption: a follower down or in flight leaves the budget as it was', async (t) => {
  const fleet = fleetOf(4);
  const base = disruption({ fleet, steps: [], busyElsewhere: new Set(), commands: new Map() });
  fleet.nodes.set('f0', node('f0', { role: 'follower', healthy: false, health: 'down' }));
  fleet.nodes.set('f1', node('f1', { role: 'follower' }));
  const d = disruption({ fleet, steps: [], busyElsewhere: new Set(['f1']), commands: new Map() });
  t.equal(d.budget, base.budget);
  t.notOk(d.unhealthy.has('f0'), 'an unhealthy follower does not count against f');
  t.notOk(d.inFlight.has('f1'), 'a busy follower uses no slot');
  t.equal(disruption({ fleet, steps: [], busyElsewhere: new Set(['v1']), commands: new Map() }).budget, base.budget - 1, 'a validator still does');
});

// ------------------------------------------------------------------ the budget by weight

/** Validators of a small chain: a block per view when its leader is up and the quorum weight is. */
class Chain {
  view = 0;
  blocks: FinalizedBlock[] = [];
  readonly tracker = new ChainTracker();
  /** Unmanaged validators that are down. */
  readonly down = new Set<string>();
  /** Node id → key, for nodes bound to a key (a follower's may be a validator's: the case to refuse). */
  readonly bindings = new Map<string, string>();

  constructor(
    readonly validators: (ChainValidator & { node: string | null })[],
    readonly fleet: FleetView,
    readonly followers: Set<string>,
  ) {
    for (const v of validators) if (v.node) this.bindings.set(v.node, v.pubkey);
  }

  private up(v: { name: string; node: string | null }): boolean {
    return v.node ? !!this.fleet.nodes.get(v.node)?.healthy : !this.down.has(v.name);
  }

  upWeight(): number {
    return this.validators.filter((v) => this.up(v)).reduce((s, v) => s + v.weight, 0);
  }

  quorum(): number {
    return quorumWeightFor(activeWeight(this.validators));
  }

  /** One view, then every healthy node reports (followers too: their reports must not be believed). */
  step(now: number): void {
    const leader = leaderOfView(this.view, this.validators) as (typeof this.validators)[number];
    if (this.up(leader) && this.upWeight() >= this.quorum()) {
      const height = (this.blocks.at(-1)?.height ?? 0) + 1;
      this.blocks.push({ height, blockId: `b${height}`, view: this.view, producer: leader.pubkey, signatureCount: null });
    }
    this.view++;
    const set = {
      epoch: 0,
      totalWeight: activeWeight(this.validators),
      quorumWeight: this.quorum(),
      validators: this.validators.map(({ name, pubkey, weight, active }) => ({ name, pubkey, weight, active })),
    };
    const height = this.blocks.at(-1)?.height ?? 0;
    for (const [id, n] of this.fleet.nodes) {
      if (!n.healthy) continue;
      this.fleet.nodes.set(id, { ...n, finalizedHeight: height, view: this.view });
      if (!this.followers.has(id)) this.tracker.observe(id, { validators: set, blocks: this.blocks.slice(-10) }, now);
    }
    const cv = this.tracker.view({ nodes: this.fleet.nodes, bindings: this.bindings, followers: this.followers, now });
    this.fleet.chain = cv;
    if (cv) {
      this.fleet.maxHeight = cv.referenceHeight;
      this.fleet.leader = cv.validators.find((v) => v.pubkey === cv.leaderPubkey)?.managedBy ?? null;
    }
  }
}

/** Four validators of weight 1 (quorum 3, largest slack 1), v0..v2 managed, val3 another operator's; two followers. */
function setup() {
  const validators = [0, 1, 2, 3].map((i) => ({ name: `val${i}`, pubkey: keyOf(i), weight: 1, active: true, node: i < 3 ? `v${i}` : null }));
  const nodes = new Map<string, NodeView>();
  for (const id of ['v0', 'v1', 'v2']) nodes.set(id, node(id));
  for (const id of ['f0', 'f1']) nodes.set(id, node(id, { role: 'follower' }));
  const fleet: FleetView = { n: 4, nodes, leader: null, maxHeight: 0, chain: null };
  const chain = new Chain(validators, fleet, new Set(['f0', 'f1']));
  const ids = ['v0', 'v1', 'f0', 'v2', 'f1'];
  const w = new World(rolloutOf(ids, {}, { maxUnavailable: 1 }), stepsOf(ids), fleet);
  return { chain, w, fleet };
}

function run(chain: Chain, w: World, ticks: number, onTick?: (i: number) => void) {
  let minUp = Infinity;
  let followersFlying = 0;
  const order: string[] = [];
  for (let i = 0; i < ticks; i++) {
    onTick?.(i);
    chain.step(w.now);
    const sentBefore = w.sent.length;
    w.tick();
    for (const s of w.sent.slice(sentBefore)) order.push(s.nodeId);
    minUp = Math.min(minUp, chain.upWeight());
    followersFlying = Math.max(followersFlying, w.steps.filter((s) => s.nodeId.startsWith('f') && ['upgrading', 'verifying'].includes(s.state)).length);
    for (const s of w.steps) if (s.state === 'upgrading' && s.startedAt != null && w.now - s.startedAt >= 300) w.finish(s.nodeId);
    w.now += 100;
    if (['completed', 'failed', 'paused'].includes(w.rollout.state)) break;
  }
  return { minUp, order, followersFlying };
}

t.test('followers go first and spend no slack; with no slack at all, only they go', async (t) => {
  const { chain, w } = setup();
  chain.down.add('val3'); // slack 0: live 3 − quorum 3
  const first = run(chain, w, 200);
  const states = Object.fromEntries(w.steps.map((s) => [s.nodeId, s.state]));
  t.same([states.f0, states.f1], ['upgraded', 'upgraded'], 'both followers upgraded while the slack is 0');
  t.same([states.v0, states.v1, states.v2], ['pending', 'pending', 'pending'], 'no validator went');
  t.same(first.order, ['f0', 'f1'], 'the followers, one wave each (maxUnavailable 1)');
  t.equal(first.followersFlying, 1, 'never two followers on their way at once');
  t.match(w.rollout.data.waiting, /network slack 0 < needed 1/, 'the validators wait for slack, and it says so');
  t.ok(first.minUp >= chain.quorum(), 'the weight up never fell below the quorum');
  t.equal(w.fleet.chain?.status, 'adopted', "the followers' reports were not needed to believe the set");
  t.notOk(
    w.fleet.chain?.alerts.some((a) => a.code === 'BINDING_MISSING'),
    'an unbound follower is no missing binding',
  );

  chain.down.delete('val3'); // slack 1: the validators go, one at a time
  const rest = run(chain, w, 600);
  t.equal(w.rollout.state, 'completed', w.rollout.reason ?? '');
  t.same(rest.order.sort(), ['v0', 'v1', 'v2']);
  t.ok(rest.minUp >= chain.quorum(), `never below quorum (lowest ${rest.minUp})`);
});

t.test('a follower whose key the chain lists as a validator is not upgraded as a follower', async (t) => {
  const { chain, w, fleet } = setup();
  chain.bindings.set('f1', keyOf(3)); // f1 "follower" is in truth val3
  run(chain, w, 3);
  t.equal(w.rollout.state, 'paused', 'the rollout pauses before dispatching anything');
  t.equal(w.rollout.code, 'E_FOLLOWER_IS_VALIDATOR');
  t.match(w.rollout.reason, /f1 is registered as a follower, but its key 0daa… is validator val3 \(weight 1\) of epoch 0/);
  t.same(w.sent, [], 'nothing sent');
  t.equal(fleet.chain?.byNode.get('f1')?.name, 'val3', 'its weight counts as the validator it is');
  const d = disruption({ fleet, steps: [], busyElsewhere: new Set(['f1']), commands: new Map() });
  t.ok(d.inFlight.has('f1'), 'in flight, it would spend the budget');
  t.throws(
    () => planRollout({ target: { version: '1.1.0' }, strategy: 'rolling', nodes: ['f0', 'f1'], options: w.rollout.options }, fleet, [], w.now),
    { code: 'E_FOLLOWER_IS_VALIDATOR' },
    'and a new rollout with it is refused',
  );
  // A follower that says it leads is a validator too, bound or not.
  fleet.nodes.set('f0', { ...fleet.nodes.get('f0')!, isLeader: true });
  t.throws(
    () => planRollout({ target: { version: '1.1.0' }, strategy: 'rolling', nodes: ['f0'], options: w.rollout.options }, fleet, [], w.now),
    /f0 is registered as a follower, but its node says it leads/,
  );
});

t.test('plan: followers in their own first waves, a validator the default canary', async (t) => {
  const { chain, w, fleet } = setup();
  chain.step(w.now);
  const opts = { ...w.rollout.options, maxUnavailable: 1 };
  const plan = planRollout({ target: { version: '1.1.0' }, strategy: 'rolling', options: opts }, fleet, [], w.now);
  t.same(plan.waves.slice(0, 2), [['f0'], ['f1']], 'followers first');
  t.same(plan.waves.slice(2).flat().sort(), ['v0', 'v1', 'v2']);
  t.same(plan.chain?.waveWeights.slice(0, 2), [0, 0], 'followers weigh nothing');
  const canary = planRollout({ target: { version: '1.1.0' }, strategy: 'canary', options: opts }, fleet, [], w.now);
  t.match(canary.canary, /^v/, 'the canary is a validator');
  // A fleet of one validator (f = 0) and followers: a rollout of the followers needs no f.
  const small: FleetView = {
    n: 1,
    nodes: new Map([
      ['v0', node('v0')],
      ['f0', node('f0', { role: 'follower' })],
    ]),
    leader: 'v0',
    maxHeight: 100,
  };
  t.same(planRollout({ target: { version: '1.1.0' }, strategy: 'rolling', nodes: ['f0'], options: opts }, small, [], w.now).waves, [['f0']]);
  t.throws(() => planRollout({ target: { version: '1.1.0' }, strategy: 'rolling', options: opts }, small, [], w.now), { code: 'E_DISRUPTION_BUDGET' });
});

t.test('a canary is judged against nodes of its own role', async (t) => {
  const metrics = { requestsTotal: 100, errorsTotal: 0, latencyMs: 5, scrapedAt: '2026-01-01T00:00:00Z' };
  const fleet = fleetOf(4);
  for (const [k, v] of fleet.nodes) fleet.nodes.set(k, { ...v, metrics });
  for (const id of ['f0', 'f1']) fleet.nodes.set(id, node(id, { role: 'follower', metrics }));
  const ids = ['v1', 'v2', 'v3', 'f0', 'f1', 'v0'];
  for (const canary of ['v1', 'f0']) {
    const w = new World(rolloutOf(ids, { strategy: 'canary' }, { canary, soakMs: 1000 }), stepsOf(ids), {
      ...fleet,
      nodes: new Map(fleet.nodes),
    });
    for (let i = 0; i < 20 && w.rollout.state !== 'soaking'; i++) {
      w.tick();
      if (w.steps.find((s) => s.nodeId === canary)?.state === 'upgrading') w.finish(canary);
      w.advance(100);
    }
    t.equal(w.rollout.state, 'soaking', `${canary} soaks`);
    const judgedAgainst = Object.keys(w.rollout.data.soakMetrics ?? {}).filter((id) => id !== canary);
    t.same(judgedAgainst.sort(), canary === 'v1' ? ['v0', 'v2', 'v3'] : ['f1'], `${canary}: against ${judgedAgainst.join(', ')}`);
  }
});

// ------------------------------------------------------------------ a real coordinator

t.test('registration, the agent cross-check and the chain cross-check, live', async (t) => {
  const c = await liveCoordinator(t, 'roles', {
    operators: [{ name: 'alice', token: OP, role: 'operator' }],
    heartbeat: { intervalMs: 100, timeoutMs: 1000 },
    tickMs: 50,
  });
  const op = { url: c.url!, token: OP };
  const ws = c.url!.replace('http', 'ws');
  const run = (...argv: string[]) => cli(['--url', c.url!, '--token', OP, ...argv]);
  const agents: FakeAgent[] = [];
  t.teardown(() => {
    for (const a of agents) a.close();
  });
  const shared: Shared = { down: new Set(), maxDown: 0, height: 10, leader: null };
  const agent = (id: string, token: string) => {
    const a = new FakeAgent(ws, id, token, shared);
    agents.push(a);
    return a;
  };
  const tokenOf = (out: string) => /token: (\S+)/.exec(out)![1]!;

  const f0 = await run('nodes', 'add', 'f0', '--role', 'follower');
  t.equal(f0.code, EXIT.OK, f0.err);
  const v0 = await run('nodes', 'add', 'v0');
  t.equal(v0.code, EXIT.OK);
  const bad = await run('nodes', 'add', 'x0', '--role', 'leader');
  t.equal(bad.code, EXIT.USAGE, 'an unknown role is a usage error');
  t.match(bad.err, /--role.*validator, follower/);
  const listed = await api<NodeListBody>(op, 'GET', '/api/v1/nodes');
  t.same(
    listed.nodes.map((n) => [n.id, n.role]),
    [
      ['f0', 'follower'],
      ['v0', 'validator'],
    ],
    'the role is stored and listed',
  );
  t.match((await run('nodes', 'list')).out, /f0\s+follower\s+\?/, 'and shown by `nodes list`');
  t.match((await run('fleet')).out, /^followers \(outside the budget\): f0$/m, 'and by `fleet`');
  const doc = (await (await fetch(`${c.url}/docs/json`)).json()) as { paths: Record<string, { post?: { requestBody?: unknown } }> };
  t.match(JSON.stringify(doc.paths['/api/v1/nodes']?.post?.requestBody), /"role":\{"type":"string","enum":\["validator","follower"\]/, 'OpenAPI: role');

  // The agent's config must say the registered role; an agent before protocol 1.5 says none.
  const liar = agent('f0', tokenOf(f0.out));
  liar.helloExtra = { role: 'validator' };
  await liar.connect();
  t.equal(liar.refused?.code, 'E_ROLE_MISMATCH', 'a follower whose agent says validator is refused');
  t.match(liar.refused?.message, /registered as a follower, but its agent's config says validator/);
  const honest = agent('f0', tokenOf(f0.out));
  honest.helloExtra = { role: 'follower', validatorPubkey: 'f0f0' };
  await honest.connect();
  t.ok(honest.welcomed, 'the same role is welcome, and a follower may give its own key (in no set)');
  const old = agent('v0', tokenOf(v0.out));
  old.helloExtra = { validatorPubkey: keyOf(0) };
  await old.connect();
  t.ok(old.welcomed, 'no role: the registration stands');

  // The chain: five validators (val4 another operator's), reported by v0..v3.
  const set = {
    epoch: 0,
    totalWeight: 5,
    quorumWeight: 4,
    validators: [0, 1, 2, 3, 4].map((i) => ({ name: `val${i}`, pubkey: keyOf(i), weight: 1, active: true })),
  };
  old.chain = () => ({ validators: set, blocks: [] });
  for (const i of [1, 2, 3]) {
    const r = await api<NodeRegisteredBody>(op, 'POST', '/api/v1/nodes', { id: `v${i}`, pubkey: keyOf(i) });
    const a = agent(`v${i}`, r.token);
    a.chain = () => ({ validators: set, blocks: [] });
    await a.connect();
  }
  // A follower's report of the chain is not one of the f + 1 that make it believed.
  honest.chain = () => ({ validators: { ...set, epoch: 7 }, blocks: [] });
  const fleet = () => api<FleetBody>(op, 'GET', '/api/v1/fleet');
  await waitFor(async () => (await fleet()).chain?.status === 'adopted', { what: 'the set adopted', timeoutMs: 10_000, intervalMs: 25 });
  t.notOk(
    (await fleet()).alerts.some((a) => ['BINDING_UNKNOWN', 'BINDING_MISSING', 'CHAIN_SET_DISAGREEMENT'].includes(a.code) && /f0/.test(a.message)),
    "a follower's own key outside the set, and its report, raise nothing",
  );

  const e = await failure(api(op, 'POST', '/api/v1/nodes', { id: 'f1', role: 'follower', pubkey: keyOf(4) }));
  t.equal(e.status, 409);
  t.equal(e.code, 'E_FOLLOWER_IS_VALIDATOR', "registering a validator's key as a follower is refused");
  t.match(e.message, /is validator val4 of epoch 0: a node with it is not a follower/);

  // Registered without a key, its agent then claims val4's: bound, flagged, and refused a rollout.
  const f2 = await api<NodeRegisteredBody>(op, 'POST', '/api/v1/nodes', { id: 'f2', role: 'follower' });
  const sneaky = agent('f2', f2.token);
  sneaky.helloExtra = { role: 'follower', validatorPubkey: keyOf(4) };
  await sneaky.connect();
  t.ok(sneaky.welcomed);
  await waitFor(async () => (await fleet()).alerts.find((a) => a.code === 'FOLLOWER_IS_VALIDATOR'), { what: 'the flag', timeoutMs: 10_000, intervalMs: 25 });
  t.match(
    (await fleet()).alerts.find((a) => a.code === 'FOLLOWER_IS_VALIDATOR')?.message,
    /f2 is registered as a follower, but its key 0eaa… is validator val4/,
  );
  const planned = await failure(api(op, 'POST', '/api/v1/rollouts/plan', { target: { version: '1.1.0' }, nodes: ['f2'] }));
  t.equal(planned.code, 'E_FOLLOWER_IS_VALIDATOR', 'a rollout with it is refused');
});

t.test('live rollout without chain reports: followers upgrade while a validator down holds the validators', async (t) => {
  const c = await liveCoordinator(t, 'roles-rollout', {
    operators: [{ name: 'alice', token: OP, role: 'operator' }],
    heartbeat: { intervalMs: 100, timeoutMs: 1000 },
    defaults: { stabilizationMs: 0, syncDistance: 2 },
    tickMs: 50,
  });
  const op = { url: c.url!, token: OP };
  const ws = c.url!.replace('http', 'ws');
  const shared: Shared = { down: new Set(), maxDown: 0, height: 10, leader: 'v0' };
  const heights = setInterval(() => shared.height++, 50);
  const agents = new Map<string, FakeAgent>();
  t.teardown(() => {
    clearInterval(heights);
    for (const a of agents.values()) a.close();
  });
  const tokens = new Map<string, string>();
  for (const id of ['v0', 'v1', 'v2', 'v3', 'f0', 'f1']) {
    const role = id.startsWith('f') ? 'follower' : 'validator';
    tokens.set(id, (await api<NodeRegisteredBody>(op, 'POST', '/api/v1/nodes', { id, role })).token);
    if (id === 'v3') continue; // down: with n = 4, f = 1 is used up
    const a = new FakeAgent(ws, id, tokens.get(id)!, shared);
    a.helloExtra = { role };
    agents.set(id, a);
    await a.connect();
  }
  const fleet = await waitFor(
    async () => {
      const f = await api<FleetBody>(op, 'GET', '/api/v1/fleet');
      return f.down.length === 1 ? f : null;
    },
    { what: 'fleet up but v3', timeoutMs: 10_000, intervalMs: 25 },
  );
  t.equal(fleet.n, 4, 'n counts the validators only');
  t.equal(fleet.disruptionBudget, 0, 'v3 down: no budget left');
  const started = await api<RolloutDetailBody>(op, 'POST', '/api/v1/rollouts', {
    target: { version: '1.1.0', url: 'http://127.0.0.1:9/g', sha256: 'c'.repeat(64) },
  });
  const id = started.rollout.id;
  t.same(started.rollout.waves.slice(0, 2), [['f0'], ['f1']], 'followers first');
  await waitFor(async () => ['f0', 'f1'].every((f) => agents.get(f)!.version === '1.1.0'), { what: 'followers upgraded', timeoutMs: 15_000, intervalMs: 25 });
  const d = await api<RolloutDetailBody>(op, 'GET', `/api/v1/rollouts/${id}`);
  t.equal(d.rollout.state, 'running');
  t.same(
    ['v0', 'v1', 'v2'].map((v) => agents.get(v)!.executed.length),
    [0, 0, 0],
    'no validator taken down while f is used up',
  );

  const v3 = new FakeAgent(ws, 'v3', tokens.get('v3')!, shared);
  agents.set('v3', v3);
  await v3.connect();
  const done = await waitFor(
    async () => {
      const r = await api<RolloutDetailBody>(op, 'GET', `/api/v1/rollouts/${id}`);
      return ['completed', 'failed', 'paused'].includes(r.rollout.state) ? r : null;
    },
    { what: 'the rollout ends', timeoutMs: 20_000, intervalMs: 25 },
  );
  t.equal(done.rollout.state, 'completed', done.rollout.reason ?? '');
  t.ok(
    [...agents.values()].every((a) => a.version === '1.1.0'),
    'every node upgraded',
  );
});
