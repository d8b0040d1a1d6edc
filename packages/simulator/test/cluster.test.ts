import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { faultTolerance } from '@guts-upgrade/protocol/quorum';
import {
  CLI_JS,
  clusterHeights,
  consensusStatus,
  createCluster,
  maxStallMs,
  readHistory,
  spawnNode,
  stopNode,
  waitFor,
  type NodeDescriptor,
  type SimChild,
} from '../src/index.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sim-cluster-'));
const all: SimChild[] = [];
t.teardown(async () => {
  await Promise.all(all.map((k) => stopNode(k)));
  fs.rmSync(tmp, { recursive: true, force: true });
});

// The machine is shared: generous p2p timeouts keep rounds from failing under CPU load.
const timings = { block_interval_ms: 150, leader_term_ms: 500, startup_delay_ms: 50, p2p_timeout_ms: 2000, sync_blocks_per_sec: 500 };
// Deadlines are for a machine under heavy load; on a quiet one each wait takes a few seconds.
const DEADLINE_MS = 120_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const start = (d: NodeDescriptor) => {
  const c = spawnNode(CLI_JS, d.configPath);
  all.push(c);
  return c;
};
const minOf = (hs: (number | null)[]) => Math.min(...hs.map((h) => h ?? -1));

async function heightsOf(ds: NodeDescriptor[]): Promise<number[]> {
  return (await clusterHeights(ds)).map((h) => h ?? -1);
}

for (const n of [4, 7]) {
  t.test(`${n}-node cluster: finalizes, stalls without quorum, resumes`, async (t) => {
    const ds = await createCluster({ n, dir: path.join(tmp, `c${n}`), timings });
    const kids = ds.map(start);
    // A timeout says what it saw: the heights, and any node that exited (with its last lines).
    let seen = '';
    await waitFor(
      async () => {
        const hs = await clusterHeights(ds);
        const dead = kids.filter((k) => k.exitCode !== null || k.signalCode !== null);
        seen = `heights ${hs.join(',')}${dead.map((k) => `; ${ds[kids.indexOf(k)]!.name} exited ${k.exitCode ?? k.signalCode}: ${k.lines.slice(-3).join(' | ')}`).join('')}`;
        return minOf(hs) >= 5;
      },
      { timeoutMs: DEADLINE_MS, what: 'all nodes at height 5' },
    ).catch((e: Error) => {
      throw new Error(`${e.message} (${seen})`);
    });
    t.pass('all nodes finalized blocks');

    const f = faultTolerance(n);
    if (n === 4) {
      // Leader rotation; a stopped leader's views are skipped, not handed on.
      // Read until one node says it leads: the four reads may straddle a view change, each node
      // then answering for a view another node leads.
      const leaderIdx = await waitFor(
        async () => {
          const i = (await Promise.all(ds.map(consensusStatus))).findIndex((s) => s?.is_leader);
          return i >= 0 ? i + 1 : 0;
        },
        { what: 'a node that says it leads', timeoutMs: 10_000 },
      ).then((i) => i - 1);
      t.ok(leaderIdx >= 0, 'someone leads');
      const stoppedAt = Date.now();
      await stopNode(kids[leaderIdx]!);
      const survivors = ds.filter((_, i) => i !== leaderIdx);
      const h0 = minOf(await clusterHeights(survivors));
      // Run one full rotation so the stopped node's own views come around.
      await sleep(timings.leader_term_ms * n + 300);
      const h1 = await waitFor(
        async () => {
          const h = minOf(await clusterHeights(survivors));
          return h > h0 + 5 ? h : null;
        },
        { timeoutMs: DEADLINE_MS, what: 'survivors finalize' },
      );
      t.ok(h1 > h0 + 5, `f = ${f} down: chain keeps finalizing (${h0} → ${h1})`);
      const hist = readHistory(survivors.map((d) => d.historyFile));
      const after = hist.filter((e) => e.t > stoppedAt + 1000);
      t.notOk(
        after.some((e) => e.leader === ds[leaderIdx]!.name),
        'the stopped leader produced nothing',
      );
      t.notOk(
        after.some((e) => e.view % n === leaderIdx),
        'its views produced no block: nobody takes them over',
      );
      t.ok(new Set(hist.map((e) => e.leader)).size >= 2, 'leader rotates');
      kids[leaderIdx] = start(ds[leaderIdx]!);
      await waitFor(
        async () => {
          const hs = await heightsOf(ds);
          return hs[leaderIdx]! >= Math.max(...hs) - 2;
        },
        { timeoutMs: DEADLINE_MS, what: 'restarted leader caught up' },
      );
      t.pass('restarted node synced');
    }

    // f+1 down: no quorum.
    const down = Array.from({ length: f + 1 }, (_, i) => i);
    await Promise.all(down.map((i) => stopNode(kids[i]!)));
    const up = ds.filter((_, i) => !down.includes(i));
    await sleep(800); // let in-flight rounds settle and peers notice
    const a = await heightsOf(up);
    await sleep(1500);
    const b = await heightsOf(up);
    t.same(b, a, `f+1 = ${f + 1} down: survivors' heights do not rise (${a})`);
    const st = await consensusStatus(up[0]!);
    t.equal(st?.finalized_height, a[0]);

    const stallStart = Date.now();
    for (const i of down) kids[i] = start(ds[i]!);
    try {
      await waitFor(async () => minOf(await clusterHeights(ds)) > Math.max(...b) + 3, { timeoutMs: DEADLINE_MS, what: 'chain resumes on every node' });
    } catch (e) {
      t.comment(`heights ${JSON.stringify(await clusterHeights(ds))}; statuses ${JSON.stringify(await Promise.all(ds.map(consensusStatus)))}`);
      for (const i of down) t.comment(kids[i]!.lines.slice(-15).join('\n'));
      throw e;
    }
    t.pass('chain resumed after the nodes came back');
    const hist = readHistory(ds.map((d) => d.historyFile));
    t.ok(maxStallMs(hist, { from: stallStart - 2500, to: stallStart }) >= 1500, 'history shows the stall');
    const resumedAt = minOf(await clusterHeights(ds));
    await waitFor(async () => minOf(await clusterHeights(ds)) > resumedAt + 3, { timeoutMs: DEADLINE_MS, what: 'chain keeps finalizing' });
    t.pass('and keeps finalizing');
    await Promise.all(kids.map((k) => stopNode(k)));
  });
}

t.test('maxStallMs', async (t) => {
  const h = [
    { t: 0, height: 1, view: 0, leader: 'a' },
    { t: 100, height: 2, view: 0, leader: 'a' },
    { t: 150, height: 1, view: 0, leader: 'b' },
    { t: 700, height: 3, view: 1, leader: 'b' },
    { t: 800, height: 4, view: 1, leader: 'b' },
  ];
  t.equal(maxStallMs(h), 600);
  t.equal(maxStallMs(h, { from: 700, to: 1000 }), 200);
});
