import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import YAML from 'yaml';
import {
  CLI_JS,
  createCluster,
  freePorts,
  getJson,
  jsonLines,
  parseArgs,
  parsePrometheus,
  resolveConfig,
  runCommand,
  spawnNode,
  stopNode,
  waitFor,
  waitReady,
  type ConsensusStatus,
  type HealthBody,
  type SimChild,
} from '../src/index.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sim-cli-'));
const kids: SimChild[] = [];
t.teardown(async () => {
  await Promise.all(kids.map((k) => stopNode(k)));
  fs.rmSync(tmp, { recursive: true, force: true });
});

t.test('--version prints exactly guts-node X.Y.Z', async (t) => {
  const r = await runCommand(CLI_JS, ['--version']);
  t.equal(r.code, 0);
  t.equal(r.stdout, 'guts-node 1.0.0\n');
  const r2 = await runCommand(CLI_JS, ['-V'], { env: { GUTS_SIM_BUILD_VERSION: '1.2.0' } });
  t.equal(r2.stdout, 'guts-node 1.2.0\n');
});

t.test('precedence: CLI > env > config file > defaults', async (t) => {
  const file = path.join(tmp, 'prec.yaml');
  fs.writeFileSync(
    file,
    YAML.stringify({ api_addr: '127.0.0.1:1001', metrics_addr: '127.0.0.1:1002', data_dir: '/x/file', log_level: 'warn', sim: { block_interval_ms: 123 } }),
  );
  const args = (extra: string[]) => parseArgs(['-c', file, ...extra]);
  const env = { GUTS_API_ADDR: '127.0.0.1:2001', GUTS_DATA_DIR: '/x/env', GUTS_SIM_BLOCK_INTERVAL_MS: '77' };
  const a = resolveConfig(args(['--api-addr', '127.0.0.1:3001']), env);
  t.equal(a.apiAddr, '127.0.0.1:3001', 'CLI wins');
  t.equal(a.dataDir, '/x/env', 'env beats file');
  t.equal(a.metricsAddr, '127.0.0.1:1002', 'file beats default');
  t.equal(a.p2pAddr, '0.0.0.0:9000', 'default');
  t.equal(a.logLevel, 'warn');
  t.equal(a.sim.block_interval_ms, 77, 'sim env beats file');
  t.equal(a.historyFile, '/x/env.history.jsonl', 'history next to the data dir');
  const b = resolveConfig(args(['--data-dir=/x/cli']), {});
  t.equal(b.apiAddr, '127.0.0.1:1001');
  t.equal(b.dataDir, '/x/cli');
  t.equal(b.sim.block_interval_ms, 123);
  t.throws(() => resolveConfig(parseArgs(['--log-format', 'xml']), {}), /log format/);
});

t.test('a single node: start line, health, consensus and metrics shapes', async (t) => {
  const [d] = await createCluster({ n: 1, dir: path.join(tmp, 'one'), timings: { block_interval_ms: 100, startup_delay_ms: 300 } });
  const [envApi] = await freePorts(1);
  const envAddr = `127.0.0.1:${envApi}`;
  const child = spawnNode(CLI_JS, d!.configPath, { env: { GUTS_API_ADDR: envAddr } });
  kids.push(child);
  const api = `http://${envAddr}`;
  // Readiness is 503 while start-up runs, liveness already up.
  const early = await waitFor(() => getJson(`${api}/health/live`), { what: 'live', timeoutMs: 60_000 });
  t.equal(early.status, 200);
  const ready0 = await getJson(`${api}/health/ready`);
  t.equal(ready0?.status, 503, 'not ready during start-up');
  await waitReady({ apiUrl: api });

  const start = jsonLines(child).find((l) => l.msg === 'starting guts-node');
  t.ok(start, 'JSON start line');
  t.equal(start?.version, '1.0.0');
  t.equal(start?.api_addr, envAddr, 'env overrides the config file address');

  const h = await getJson<HealthBody>(`${api}/health`);
  t.equal(h?.status, 200);
  t.match(h?.body, {
    status: 'up',
    version: '1.0.0',
    uptime_seconds: Number,
    checks: { storage: { status: 'up' }, p2p: { status: 'unknown', details: { reason: 'P2P not connected or not enabled' } }, realtime: { status: 'up' } },
  });
  t.match((await getJson(`${api}/health/live`))?.body, { status: 'up', uptime_seconds: Number });
  t.match((await getJson(`${api}/health/ready`))?.body, { status: 'up', checks: { storage: { status: 'up' } } });
  t.match((await getJson(`${api}/health/startup`))?.body, { status: 'up', startup_duration_ms: Number });

  await waitFor(async () => ((await getJson<ConsensusStatus>(`${api}/api/consensus/status`))?.body.finalized_height ?? 0) >= 2, {
    what: 'blocks',
    timeoutMs: 60_000,
  });
  const st = (await getJson<ConsensusStatus>(`${api}/api/consensus/status`))!.body;
  t.same(Object.keys(st).sort(), ['current_leader', 'enabled', 'finalized_height', 'is_leader', 'pending_transactions', 'state', 'view'].sort());
  t.match(st, { enabled: true, state: 'Active', is_leader: true, current_leader: d!.pubkey });
  const vals = (await getJson(`${api}/api/consensus/validators`))!.body;
  t.match(vals, {
    epoch: 0,
    total_weight: 1,
    quorum_weight: 1,
    validator_count: 1,
    validators: [{ name: 'v0', pubkey: d!.pubkey, weight: 1, addr: d!.apiAddr, active: true }],
  });
  const blocks = (await getJson<unknown[]>(`${api}/api/consensus/blocks`))!.body;
  t.ok(blocks.length >= 2);
  const b1 = (await getJson<Record<string, unknown>>(`${api}/api/consensus/blocks/1`))!.body;
  t.same(
    Object.keys(b1).sort(),
    ['block_id', 'height', 'parent_id', 'producer', 'signature_count', 'state_root', 'timestamp', 'tx_count', 'tx_root', 'view'].sort(),
  );
  t.equal(b1.height, 1);
  t.equal((await getJson(`${api}/api/consensus/blocks/999999`))?.status, 404);

  const m = parsePrometheus(await (await fetch(d!.metricsUrl)).text());
  t.equal(m.get('guts_build_info{version="1.0.0",schema="100"}'), 1);
  t.ok((m.get('guts_consensus_finalized_height') ?? 0) >= 2);
  t.ok(m.has('guts_consensus_view'));
  t.equal(m.get('guts_p2p_peers_connected'), 0);
  t.ok((m.get('guts_http_requests_total{method="GET",path="/health",status="200"}') ?? 0) >= 1);
  t.ok(m.has('guts_http_request_duration_seconds_bucket{method="GET",path="/health",status="200",le="+Inf"}'));

  const code = await stopNode(child);
  t.equal(code, 0, 'clean exit on SIGTERM');
  t.ok(fs.existsSync(d!.historyFile), 'history written');
});
