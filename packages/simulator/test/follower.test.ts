/**
 * Follower mode on real processes: three validators and a follower (role:
 * follower). The follower keeps up by pulling finalized blocks, answers the
 * health and consensus endpoints as any node does, never leads, and never
 * counts as a vote: with two of the three validators stopped, the one left and
 * the follower finalize nothing. Stopped, it catches up when it comes back.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import YAML from 'yaml';
import {
  CLI_JS,
  clusterHeights,
  consensusStatus,
  consensusValidators,
  createCluster,
  getJson,
  resolveConfig,
  spawnNode,
  stopNode,
  waitFor,
  type NodeDescriptor,
  type SimChild,
} from '../src/index.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sim-follower-'));
const kids = new Map<string, SimChild>();
t.teardown(async () => {
  await Promise.all([...kids.values()].map((k) => stopNode(k)));
  fs.rmSync(tmp, { recursive: true, force: true });
});

const timings = { block_interval_ms: 100, leader_term_ms: 400, startup_delay_ms: 50, p2p_timeout_ms: 2000, sync_blocks_per_sec: 500 };
const DEADLINE_MS = 60_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const start = (d: NodeDescriptor) => kids.set(d.name, spawnNode(CLI_JS, d.configPath));

t.test('config: role follower, from the file or GUTS_SIM_ROLE', async (t) => {
  const dir = path.join(tmp, 'cfg');
  fs.mkdirSync(dir);
  const file = path.join(dir, 'config.yaml');
  const validators = [{ name: 'v0', addr: '127.0.0.1:1' }];
  const write = (o: object) => fs.writeFileSync(file, YAML.stringify({ name: 'f0', data_dir: path.join(dir, 'data'), validators, ...o }));
  const args = { flags: { config: file }, positionals: [] };
  write({ role: 'follower' });
  t.equal(resolveConfig(args, {}).role, 'follower');
  write({});
  t.throws(() => resolveConfig(args, {}), /not in validators/, 'a validator must be in the set');
  t.equal(resolveConfig(args, { GUTS_SIM_ROLE: 'follower' }).role, 'follower', 'the env var names the role');
  t.throws(() => resolveConfig(args, { GUTS_SIM_ROLE: 'observer' }), /invalid role/);
  fs.writeFileSync(file, YAML.stringify({ name: 'v0', role: 'follower', validators }));
  t.throws(() => resolveConfig(args, {}), /is in validators/, 'a follower is outside the set');
});

t.test('a follower follows a real cluster, never votes, catches up after a restart', async (t) => {
  const ds = await createCluster({ n: 3, followers: ['f0'], dir: path.join(tmp, 'c'), timings });
  const validators = ds.slice(0, 3);
  const f0 = ds[3]!;
  t.equal(f0.name, 'f0');
  ds.forEach(start);
  await waitFor(async () => Math.min(...(await clusterHeights(ds)).map((h) => h ?? -1)) >= 5, { timeoutMs: DEADLINE_MS, what: 'every node at height 5' });

  // Health, readiness and status answer as on any node.
  t.equal((await getJson(`${f0.apiUrl}/health/ready`))?.status, 200, 'the follower is ready');
  const health = await getJson<{ status: string; version: string }>(`${f0.apiUrl}/health`);
  t.equal(health?.body.status, 'up');
  t.equal(health?.body.version, '1.0.0');
  const set = await consensusValidators(f0);
  t.same(
    set?.validators.map((v) => v.name),
    ['v0', 'v1', 'v2'],
    'the follower reports the validators, not itself',
  );
  t.notOk(
    set?.validators.some((v) => v.pubkey === f0.pubkey),
    'its key is in no validator set',
  );
  t.same((await consensusValidators(validators[0]!))?.validators.length, 3, 'the validators do not list it either');
  t.match(set, { total_weight: 3, quorum_weight: 2 }, 'the weight and the quorum are the validators’ alone');
  // Sampled over more than one rotation: it never says it leads, and names a validator as leader.
  const keys = new Set(validators.map((v) => v.pubkey));
  for (let i = 0; i < 8; i++) {
    const s = await consensusStatus(f0);
    t.equal(s?.is_leader, false, 'the follower never leads');
    if (s?.current_leader) t.ok(keys.has(s.current_leader), 'its current leader is a validator');
    await sleep(timings.leader_term_ms / 2);
  }
  const s = (await consensusStatus(f0))!;
  t.equal(s.state, 'Active', 'caught up, the follower is Active');
  const h = s.finalized_height;
  const a = await getJson<{ block_id: string }>(`${validators[0]!.apiUrl}/api/consensus/blocks/${h}`);
  const b = await getJson<{ block_id: string }>(`${f0.apiUrl}/api/consensus/blocks/${h}`);
  t.equal(b?.body.block_id, a?.body.block_id, 'the follower holds the finalized chain');

  // Asked for a vote by the leader of the view, as a validator would be, the follower gives none.
  const tip = (await getJson<{ height: number; block_id: string }[]>(`${f0.apiUrl}/api/consensus/blocks`))!.body.at(-1)!;
  const leader = validators.find((v) => v.pubkey === s.current_leader) ?? validators[0]!;
  const vote = await fetch(`${f0.apiUrl}/p2p/propose`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-guts-peer': leader.name },
    body: JSON.stringify({ height: tip.height + 1, parent_id: tip.block_id, producer: leader.pubkey, producer_name: leader.name, view: s.view }),
  });
  t.same(await vote.json(), { ack: false }, 'the follower never votes');

  // Never counted: one validator of three (quorum 2) and the follower finalize nothing.
  await Promise.all(['v1', 'v2'].map((n) => stopNode(kids.get(n)!)));
  await sleep(timings.leader_term_ms); // a commit on its way lands first
  const stalled = (await consensusStatus(validators[0]!))!.finalized_height;
  await sleep(timings.leader_term_ms * 4);
  t.equal((await consensusStatus(validators[0]!))!.finalized_height, stalled, 'v0 and the follower make no quorum');
  t.equal((await consensusStatus(f0))!.finalized_height, stalled, 'the follower holds what was finalized');

  // The validators come back; the follower goes down meanwhile and catches up when it returns.
  await stopNode(kids.get('f0')!);
  start(validators[1]!);
  start(validators[2]!);
  await waitFor(async () => ((await consensusStatus(validators[0]!))?.finalized_height ?? 0) >= stalled + 20, {
    timeoutMs: DEADLINE_MS,
    what: 'the validators finalizing again',
  });
  start(f0);
  const target = (await consensusStatus(validators[0]!))!.finalized_height;
  await waitFor(async () => ((await consensusStatus(f0))?.finalized_height ?? 0) >= target, { timeoutMs: DEADLINE_MS, what: 'the follower caught up' });
  await waitFor(async () => (await consensusStatus(f0))?.state === 'Active', { timeoutMs: DEADLINE_MS, what: 'the follower Active again' });
  t.pass(`the follower caught up from ${stalled} past ${target}`);
});
