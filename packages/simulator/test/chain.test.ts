/**
 * The chain's own rules on a live cluster: weighted quorum, the leader of
 * each view by leaderOfView with a down leader's views skipped, blocks whose
 * view, producer and signature_count are truthful (certificates carry exactly
 * the quorum), and an epoch change set at run time.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { leaderOfView, type ChainValidator } from '@guts-upgrade/protocol/chain';
import {
  CLI_JS,
  clusterHeights,
  consensusStatus,
  consensusValidators,
  createCluster,
  getJson,
  setNodeEpoch,
  spawnNode,
  stopNode,
  waitFor,
  type BlockReport,
  type NodeDescriptor,
  type SimChild,
  type ValidatorsReport,
} from '../src/index.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sim-chain-'));
const all: SimChild[] = [];
t.teardown(async () => {
  await Promise.all(all.map((k) => stopNode(k)));
  fs.rmSync(tmp, { recursive: true, force: true });
});

const timings = { block_interval_ms: 150, leader_term_ms: 600, startup_delay_ms: 50, p2p_timeout_ms: 2000, sync_blocks_per_sec: 500 };
const DEADLINE_MS = 120_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const start = (d: NodeDescriptor) => {
  const c = spawnNode(CLI_JS, d.configPath);
  all.push(c);
  return c;
};
const heights = async (ds: NodeDescriptor[]) => (await clusterHeights(ds)).map((h) => h ?? -1);
const minOf = (hs: number[]) => Math.min(...hs);

function chainSet(r: ValidatorsReport): ChainValidator[] {
  return r.validators.map((v) => ({ name: v.name, pubkey: v.pubkey, weight: v.weight, active: v.active }));
}

/** Blocks from..to (inclusive) as one node serves them. */
async function blocks(d: NodeDescriptor, from: number, to: number): Promise<BlockReport[]> {
  const out: BlockReport[] = [];
  for (let h = from; h <= to; h++) {
    const r = await getJson<BlockReport>(`${d.apiUrl}/api/consensus/blocks/${h}`, 3000);
    if (r?.status === 200) out.push(r.body);
  }
  return out;
}

/** Smallest number of signatures whose weight reaches the quorum, the producer's own first. */
function minimalCertificate(set: ChainValidator[], producer: string, quorum: number): number {
  const own = set.find((v) => v.pubkey === producer)!;
  let w = own.active ? own.weight : 0;
  let n = 1;
  for (const v of set.filter((x) => x !== own && x.active).sort((a, b) => b.weight - a.weight)) {
    if (w >= quorum) break;
    w += v.weight;
    n++;
  }
  return n;
}

t.test('weights 5,1,1,1: quorum by weight; the heavy node down stalls the chain, a light one does not', async (t) => {
  const ds = await createCluster({ n: 4, dir: path.join(tmp, 'w5'), timings, weights: [5, 1, 1, 1] });
  const kids = ds.map(start);
  await waitFor(async () => minOf(await heights(ds)) >= 4, { timeoutMs: DEADLINE_MS, what: 'all nodes at height 4' });
  const vr = (await consensusValidators(ds[0]!))!;
  t.match(vr, { epoch: 0, total_weight: 8, quorum_weight: 6, validator_count: 4 });
  t.same(
    vr.validators.map((v) => [v.name, v.weight, v.active, v.addr]),
    ds.map((d, i) => [d.name, i === 0 ? 5 : 1, true, d.apiAddr]),
  );
  const set = chainSet(vr);
  const top = minOf(await heights(ds));
  for (const b of await blocks(ds[1]!, 1, top)) {
    t.equal(b.producer, leaderOfView(b.view, set)!.pubkey, `block ${b.height}: producer is the leader of view ${b.view}`);
    t.equal(b.signature_count, 2, `block ${b.height}: the certificate carries exactly the quorum (5 + 1)`);
  }
  const st = (await Promise.all(ds.map(consensusStatus)))!;
  const view = st[0]!.view;
  t.equal(st[0]!.current_leader, leaderOfView(view, set)!.pubkey, 'current_leader is the leader of the view');
  t.ok(st.filter((s) => s?.is_leader).length <= 1, 'at most one node says it leads');

  // A weight-1 node down: 7 ≥ 6, the chain finalizes.
  await stopNode(kids[3]!);
  const h0 = minOf(await heights(ds.slice(0, 3)));
  await waitFor(async () => minOf(await heights(ds.slice(0, 3))) >= h0 + 5, { timeoutMs: DEADLINE_MS, what: 'finalizes with v3 down' });
  t.pass('one weight-1 validator down: finalizes');
  kids[3] = start(ds[3]!);
  await waitFor(
    async () => {
      const hs = await heights(ds);
      return hs[3]! >= Math.max(...hs) - 2;
    },
    { timeoutMs: DEADLINE_MS, what: 'v3 caught up' },
  );

  // The weight-5 node down: 3 < 6, nothing finalizes although three of four validators are up.
  await stopNode(kids[0]!);
  await sleep(1000);
  const a = await heights(ds.slice(1));
  await sleep(2 * timings.leader_term_ms * 4);
  const b = await heights(ds.slice(1));
  t.same(b, a, `weight 5 of 8 down: three validators up, heights do not rise (${a})`);
  kids[0] = start(ds[0]!);
  await waitFor(async () => minOf(await heights(ds)) > Math.max(...b) + 3, { timeoutMs: DEADLINE_MS, what: 'chain resumes' });
  t.pass('resumes when it comes back');
  await Promise.all(kids.map((k) => stopNode(k)));
});

t.test("four of weight 1: a down leader's views produce nothing, nobody takes them; a rolling restart still finalizes", async (t) => {
  const ds = await createCluster({ n: 4, dir: path.join(tmp, 'w1'), timings });
  const kids = ds.map(start);
  await waitFor(async () => minOf(await heights(ds)) >= 3, { timeoutMs: DEADLINE_MS, what: 'all nodes at height 3' });
  const vr = (await consensusValidators(ds[0]!))!;
  t.match(vr, { epoch: 0, total_weight: 4, quorum_weight: 3, validator_count: 4 });
  const set = chainSet(vr);

  await stopNode(kids[1]!);
  const up = [ds[0]!, ds[2]!, ds[3]!];
  await sleep(500);
  const from = Math.max(...(await heights(up))) + 1;
  await waitFor(async () => minOf(await heights(up)) >= from + 25, { timeoutMs: DEADLINE_MS, what: 'survivors finalize 25 blocks' });
  const got = await blocks(ds[2]!, from, from + 24);
  t.equal(got.length, 25);
  const views = new Set(got.map((b) => b.view));
  for (const b of got) {
    t.equal(b.producer, leaderOfView(b.view, set)!.pubkey, `block ${b.height} (view ${b.view}): producer = leaderOfView`);
    t.equal(b.signature_count, 3, `block ${b.height}: three signatures, the quorum`);
  }
  t.notOk(
    got.some((b) => b.view % 4 === 1),
    "no block in any of v1's views",
  );
  const lo = Math.min(...views);
  const hi = Math.max(...views);
  const skipped = [];
  for (let v = lo; v <= hi; v++) if (!views.has(v)) skipped.push(v);
  t.ok(skipped.length > 0 && skipped.some((v) => v % 4 === 1), `v1's turns are skipped (views ${lo}..${hi}, skipped ${skipped.join(',')})`);
  const othersSkipped = skipped.filter((v) => v % 4 !== 1);
  if (othersSkipped.length) t.comment(`views skipped by a live leader (a loaded machine): ${othersSkipped.join(',')}`);
  const st = await consensusStatus(ds[0]!);
  t.equal(st?.current_leader, leaderOfView(st!.view, set)!.pubkey, 'current_leader names the view leader even when it is down');
  kids[1] = start(ds[1]!);
  await waitFor(
    async () => {
      const hs = await heights(ds);
      return hs[1]! >= Math.max(...hs) - 2;
    },
    { timeoutMs: DEADLINE_MS, what: 'v1 caught up' },
  );

  // One node at a time down and back, as a rolling upgrade does: the chain finalizes throughout.
  for (let i = 0; i < 4; i++) {
    await stopNode(kids[i]!);
    const rest = ds.filter((_, j) => j !== i);
    const h = minOf(await heights(rest));
    await waitFor(async () => minOf(await heights(rest)) >= h + 4, { timeoutMs: DEADLINE_MS, what: `finalizes with ${ds[i]!.name} down` });
    kids[i] = start(ds[i]!);
    await waitFor(
      async () => {
        const hs = await heights(ds);
        return hs[i]! >= Math.max(...hs) - 2;
      },
      { timeoutMs: DEADLINE_MS, what: `${ds[i]!.name} caught up` },
    );
  }
  t.pass('each node down in turn: the chain kept finalizing');
  await Promise.all(kids.map((k) => stopNode(k)));
});

t.test('an epoch change alters weights on every node; a node that was down adopts it from its peers', async (t) => {
  const ds = await createCluster({ n: 4, dir: path.join(tmp, 'ep'), timings });
  const kids = ds.map(start);
  await waitFor(async () => minOf(await heights(ds)) >= 3, { timeoutMs: DEADLINE_MS, what: 'all nodes at height 3' });

  t.match(await setNodeEpoch(ds[0]!, 1, [1, 1]), { status: 400 }, 'weights for the wrong number of validators: refused');
  t.match((await getJson(`${ds[0]!.apiUrl}/sim/epoch`))?.status, 404, 'GET is not a control');

  await stopNode(kids[3]!);
  t.match(await setNodeEpoch(ds[0]!, 1, [4, 1, 1, 1]), { status: 200, body: { epoch: 1, weights: [4, 1, 1, 1], changed: true } });
  // The others may already have it from v0 (peers adopt a newer epoch): set or not, it is accepted.
  for (const d of ds.slice(1, 3)) t.match(await setNodeEpoch(d, 1, [4, 1, 1, 1]), { status: 200, body: { epoch: 1, weights: [4, 1, 1, 1] } });
  t.match(await setNodeEpoch(ds[0]!, 1, [4, 1, 1, 1]), { status: 200, body: { changed: false } }, 'the same epoch again: no change');
  t.match(await setNodeEpoch(ds[0]!, 1, [1, 1, 1, 4]), { status: 409 }, 'the same epoch number with other weights: conflict');
  t.match(await setNodeEpoch(ds[0]!, 0, [1, 1, 1, 1]), { status: 409 }, 'an older epoch: conflict');
  const vr = (await consensusValidators(ds[1]!))!;
  t.match(vr, { epoch: 1, total_weight: 7, quorum_weight: 5 });
  t.same(
    vr.validators.map((v) => v.weight),
    [4, 1, 1, 1],
  );

  // 4 + 1 + 1 = 6 ≥ 5 with v3 down: still finalizes; then v3 comes back and learns epoch 1 from its peers.
  const h0 = minOf(await heights(ds.slice(0, 3)));
  await waitFor(async () => minOf(await heights(ds.slice(0, 3))) >= h0 + 4, { timeoutMs: DEADLINE_MS, what: 'finalizes in epoch 1' });
  kids[3] = start(ds[3]!);
  await waitFor(async () => (await consensusValidators(ds[3]!))?.epoch === 1, { timeoutMs: DEADLINE_MS, what: 'v3 adopts epoch 1' });
  await waitFor(
    async () => {
      const hs = await heights(ds);
      return hs[3]! >= Math.max(...hs) - 2;
    },
    { timeoutMs: DEADLINE_MS, what: 'v3 caught up' },
  );
  const set = chainSet((await consensusValidators(ds[3]!))!);
  // A node that did not answer in time reads as -1 (seen under load): read until all do,
  // or the blocks checked would start in epoch 0, whose certificates differ.
  const lowest = await waitFor(
    async () => {
      const m = minOf(await heights(ds));
      return m >= 0 ? m : undefined;
    },
    { timeoutMs: DEADLINE_MS, what: 'every node answers' },
  );
  const from = lowest + 1;
  await waitFor(async () => minOf(await heights(ds)) >= from + 8, { timeoutMs: DEADLINE_MS, what: 'eight blocks in epoch 1' });
  for (const b of await blocks(ds[2]!, from, from + 7)) {
    t.equal(b.producer, leaderOfView(b.view, set)!.pubkey, `block ${b.height}: producer = leaderOfView`);
    t.equal(b.signature_count, minimalCertificate(set, b.producer, 5), `block ${b.height}: a minimal certificate (${b.signature_count})`);
  }

  // Kept over a restart (the file beside the data dir).
  await stopNode(kids[0]!);
  kids[0] = start(ds[0]!);
  await waitFor(async () => (await consensusValidators(ds[0]!))?.epoch === 1, { timeoutMs: DEADLINE_MS, what: 'v0 restarts in epoch 1' });
  t.pass('a restart keeps the epoch');
  await Promise.all(kids.map((k) => stopNode(k)));
});
