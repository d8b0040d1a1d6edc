/**
 * The start-up phases and p2p shapes of the real node, per node: storage
 * opens before readiness, the engine reports `Starting` before it takes part,
 * p2p is `unknown` all along (today's node), or `unknown` then `up` with a
 * peer count that rises over a warm-up (a future node), or `up` with 0 peers
 * (a node that connects to nobody).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import {
  CLI_JS,
  clusterHeights,
  createCluster,
  getJson,
  parsePrometheus,
  resolveConfig,
  parseArgs,
  spawnNode,
  stopNode,
  waitFor,
  type ConsensusStatus,
  type HealthBody,
  type NodeDescriptor,
  type SimChild,
} from '../src/index.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sim-warmup-'));
const kids: SimChild[] = [];
t.teardown(async () => {
  await Promise.all(kids.map((k) => stopNode(k)));
  fs.rmSync(tmp, { recursive: true, force: true });
});

const timings = { block_interval_ms: 150, leader_term_ms: 500, startup_delay_ms: 50, p2p_timeout_ms: 2000, sync_blocks_per_sec: 500 };

interface Seen {
  ready: number | null;
  storage: string | null;
  storageReason: string | null;
  state: string | null;
  p2p: string | null;
  peers: number | null;
  reason: string | null;
}

async function look(d: NodeDescriptor): Promise<Seen> {
  const [h, r, c] = await Promise.all([
    getJson<HealthBody>(`${d.apiUrl}/health`, 2000),
    getJson(`${d.apiUrl}/health/ready`, 2000),
    getJson<ConsensusStatus>(`${d.apiUrl}/api/consensus/status`, 2000),
  ]);
  const p2p = h?.body?.checks?.p2p;
  const storage = h?.body?.checks?.storage;
  return {
    ready: r?.status ?? null,
    storage: storage?.status ?? null,
    storageReason: (storage?.details?.reason as string | undefined) ?? null,
    state: c?.status === 200 ? c.body.state : null,
    p2p: p2p?.status ?? null,
    peers: typeof p2p?.details?.peer_count === 'number' ? p2p.details.peer_count : null,
    reason: (p2p?.details?.reason as string | undefined) ?? null,
  };
}

t.test('config: the p2p shape is one of three, the phases are durations', async (t) => {
  const file = path.join(tmp, 'c.yaml');
  fs.writeFileSync(file, 'sim:\n  p2p_report: reported\n  p2p_warmup_ms: 5000\n  consensus_start_ms: 800\n  storage_open_ms: 300\n');
  const c = resolveConfig(parseArgs(['--config', file]), {});
  t.match(c.sim, { p2p_report: 'reported', p2p_warmup_ms: 5000, consensus_start_ms: 800, storage_open_ms: 300 });
  t.equal(resolveConfig(parseArgs([]), {}).sim.p2p_report, 'unknown', "today's node by default");
  t.equal(resolveConfig(parseArgs(['--config', file]), { GUTS_SIM_P2P_REPORT: 'isolated' }).sim.p2p_report, 'isolated');
  t.throws(() => resolveConfig(parseArgs(['--config', file]), { GUTS_SIM_P2P_REPORT: 'sometimes' }), /p2p_report must be one of unknown, reported, isolated/);
});

t.test('phases per node: storage, readiness, Starting, peers rising; unknown throughout; isolated', async (t) => {
  const ds = await createCluster({
    n: 4,
    dir: path.join(tmp, 'c4'),
    timings,
    nodeTimings: {
      v2: { p2p_report: 'isolated' },
      v3: { p2p_report: 'reported', storage_open_ms: 600, consensus_start_ms: 1000, p2p_warmup_ms: 3000 },
    },
  });
  const [v0, v1, v2, v3] = ds as [NodeDescriptor, NodeDescriptor, NodeDescriptor, NodeDescriptor];
  for (const d of [v0, v1, v2]) kids.push(spawnNode(CLI_JS, d.configPath));
  await waitFor(async () => (await look(v0)).ready === 200 && (await look(v1)).ready === 200, { timeoutMs: 60_000, what: 'v0 v1 ready' });

  kids.push(spawnNode(CLI_JS, v3.configPath));
  const seen: Seen[] = [];
  await waitFor(
    async () => {
      const s = await look(v3);
      seen.push(s);
      return s.peers === 2 && s.state === 'Active';
    },
    { timeoutMs: 120_000, intervalMs: 50, what: 'v3 up with its two connectable peers' },
  );

  t.ok(
    seen.some((s) => s.ready === 503 && s.storage === 'down' && s.storageReason === 'opening storage'),
    'not ready while storage opens',
  );
  const firstReady = seen.findIndex((s) => s.ready === 200);
  t.ok(
    seen.slice(0, firstReady).every((s) => s.storage !== 'up'),
    'ready only after storage is up',
  );
  t.equal(seen[firstReady]?.state, 'Starting', 'the engine is Starting when readiness comes');
  const firstUp = seen.findIndex((s) => s.p2p === 'up');
  t.ok(firstUp > firstReady, 'p2p comes up after readiness');
  t.ok(
    seen
      .slice(0, firstUp)
      .filter((s) => s.p2p)
      .every((s) => s.p2p === 'unknown' && s.reason === 'P2P not connected or not enabled'),
    'unknown until a first peer connects',
  );
  const counts = seen.slice(firstUp).map((s) => s.peers ?? -1);
  t.ok(counts.indexOf(1) >= 0 && counts.indexOf(1) < counts.indexOf(2), `the count rises over the warm-up: ${[...new Set(counts)].join(' -> ')}`);

  for (const d of [v0, v1]) {
    const s = await look(d);
    t.match(s, { p2p: 'unknown', reason: 'P2P not connected or not enabled', peers: null }, `${d.name}: unknown throughout`);
    const m = parsePrometheus(await (await fetch(d.metricsUrl)).text());
    t.equal(m.get('guts_p2p_peers_connected'), 0, `${d.name}: the gauge is never set`);
  }
  // v0, v1, v3 finalize together; v2 reports up with no peers and stays out.
  const h0 = (await clusterHeights([v0]))[0] ?? 0;
  await waitFor(async () => ((await clusterHeights([v3]))[0] ?? 0) > h0 + 2, { timeoutMs: 120_000, what: 'v3 follows the chain' });
  t.match(await look(v2), { p2p: 'up', peers: 0 }, 'the isolated node: up with 0 peers');
  t.equal((await clusterHeights([v2]))[0], 0, 'and it finalizes nothing');
});
