import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import {
  buildArtifacts,
  createCluster,
  findArtifact,
  getJson,
  installBinary,
  jsonLines,
  parsePrometheus,
  runCommand,
  spawnNode,
  startArtifactServer,
  stopNode,
  waitFor,
  waitReady,
  type Fault,
  type HealthBody,
  type SimChild,
  type SimTimings,
} from '../src/index.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sim-art-'));
const kids: SimChild[] = [];
t.teardown(async () => {
  await Promise.all(kids.map((k) => stopNode(k)));
  fs.rmSync(tmp, { recursive: true, force: true });
});

const outDir = path.join(tmp, 'artifacts');
const m = buildArtifacts({ outDir });
const timings = { startup_delay_ms: 50, fault_delay_ms: 400, block_interval_ms: 100 };

t.test('manifest matches the files', async (t) => {
  t.equal(m.artifacts.length, 11);
  const onDisk = JSON.parse(fs.readFileSync(path.join(outDir, 'manifest.json'), 'utf8'));
  t.same(onDisk.artifacts, m.artifacts);
  for (const a of m.artifacts) {
    const file = path.join(outDir, a.file);
    t.equal(crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex'), a.sha256, `${a.name} sha256`);
    t.equal(fs.statSync(file).size, a.size);
    t.equal(fs.statSync(file).mode & 0o777, 0o755);
    t.ok(fs.readFileSync(file, 'utf8').startsWith(`#!${process.execPath}\n`), 'absolute node shebang');
  }
  t.equal(new Set(m.artifacts.map((a) => a.sha256)).size, m.artifacts.length, 'every build is distinct');
});

t.test('--version of each build, also once installed elsewhere', async (t) => {
  for (const a of m.artifacts) {
    const r = await runCommand(a.path, ['--version']);
    t.equal(r.stdout, `guts-node ${a.version}\n`, a.name);
  }
  const dest = path.join(tmp, 'usr-local-bin', 'guts-node');
  installBinary(findArtifact(m, '1.2.0').path, dest);
  t.equal((await runCommand(dest, ['--version'])).stdout, 'guts-node 1.2.0\n');
});

async function node(name: string, version: string, fault: Exclude<Fault, 'none'>, extra: Partial<SimTimings> = {}) {
  const [d] = await createCluster({ n: 1, dir: path.join(tmp, name), timings: { ...timings, ...extra } });
  const c = spawnNode(findArtifact(m, version, fault).path, d!.configPath);
  kids.push(c);
  return { d: d!, c };
}

t.test('bad build: exits', async (t) => {
  const { c } = await node('exits', '1.1.0', 'exits');
  const r = await c.exited;
  t.not(r.code, 0, 'exits non-zero');
  t.ok(jsonLines(c).some((l) => l.msg === 'starting guts-node' && l.version === '1.1.0'));
});

t.test('bad build: never-ready', async (t) => {
  const { d, c } = await node('never', '1.1.0', 'never-ready');
  await waitFor(async () => (await getJson(`${d.apiUrl}/health/startup`))?.status === 200, { what: 'startup done' });
  await new Promise((r) => setTimeout(r, 300));
  t.equal((await getJson(`${d.apiUrl}/health/live`))?.status, 200, 'live');
  t.equal((await getJson(`${d.apiUrl}/health/ready`))?.status, 503, 'never ready');
  t.equal((await getJson(`${d.apiUrl}/health`))?.status, 503);
  t.equal(c.exitCode, null, 'still running');
});

t.test('bad build: corrupts', async (t) => {
  const { d, c } = await node('corrupts', '1.1.0', 'corrupts');
  await waitReady(d);
  await waitFor(async () => (await getJson(`${d.apiUrl}/health`))?.status === 503, { what: 'storage down' });
  const h = (await getJson<HealthBody>(`${d.apiUrl}/health`))!.body;
  t.equal(h.checks.storage.status, 'down');
  t.equal((await getJson(`${d.apiUrl}/health/ready`))?.status, 503);
  await stopNode(c);
  const v = await runCommand(findArtifact(m, '1.0.1').path, ['verify', '--data-dir', d.dataDir, '--full']);
  t.not(v.code, 0, 'verify --full fails');
});

t.test('bad build: lies', async (t) => {
  const a = findArtifact(m, '1.1.0', 'lies');
  t.equal((await runCommand(a.path, ['--version'])).stdout, 'guts-node 1.1.0\n');
  const { d, c } = await node('lies', '1.1.0', 'lies');
  await waitReady(d);
  t.equal((await getJson<HealthBody>(`${d.apiUrl}/health`))!.body.version, '1.0.1', '/health reports 1.0.1');
  const metrics = parsePrometheus(await (await fetch(d.metricsUrl)).text());
  t.ok(
    [...metrics.keys()].some((k) => k.startsWith('guts_build_info{version="1.0.1"')),
    'build_info reports 1.0.1',
  );
  t.ok(
    jsonLines(c).some((l) => l.msg === 'starting guts-node' && l.version === '1.0.1'),
    'start line reports 1.0.1',
  );
});

t.test('artifact server: ranges and faults', async (t) => {
  const a = findArtifact(m, '1.0.0');
  const bytes = fs.readFileSync(a.path);
  const s = await startArtifactServer({ dir: outDir });
  t.teardown(() => s.close());
  const full = await fetch(`${s.url}/${a.file}`);
  t.equal(full.status, 200);
  t.equal(full.headers.get('accept-ranges'), 'bytes');
  t.ok(Buffer.from(await full.arrayBuffer()).equals(bytes));
  const part = await fetch(`${s.url}/${a.file}`, { headers: { range: 'bytes=10-' } });
  t.equal(part.status, 206);
  t.equal(part.headers.get('content-range'), `bytes 10-${bytes.length - 1}/${bytes.length}`);
  t.ok(Buffer.from(await part.arrayBuffer()).equals(bytes.subarray(10)));
  const mid = await fetch(`${s.url}/${a.file}`, { headers: { range: 'bytes=2-5' } });
  t.same(Buffer.from(await mid.arrayBuffer()), bytes.subarray(2, 6));
  t.equal((await fetch(`${s.url}/${a.file}`, { headers: { range: `bytes=${bytes.length + 5}-` } })).status, 416);
  t.equal((await fetch(`${s.url}/nope`)).status, 404);
  t.equal((await fetch(`${s.url}/../etc/passwd`)).status, 404);
  const man = (await (await fetch(`${s.url}/manifest.json`)).json()) as { artifacts: unknown[] };
  t.equal(man.artifacts.length, 11);

  const f = await startArtifactServer({ dir: outDir, faults: { cutAfterBytes: 50, cutFirst: 1, fail500First: 0 } });
  t.teardown(() => f.close());
  await t.rejects(
    (async () => {
      const r = await fetch(`${f.url}/${a.file}`);
      await r.arrayBuffer();
    })(),
    'first download cut',
  );
  const resumed = await fetch(`${f.url}/${a.file}`, { headers: { range: 'bytes=50-' } });
  t.ok(Buffer.concat([bytes.subarray(0, 50), Buffer.from(await resumed.arrayBuffer())]).equals(bytes), 'resumed with a range');

  const e = await startArtifactServer({ dir: outDir, faults: { fail500First: 2 } });
  t.teardown(() => e.close());
  t.equal((await fetch(`${e.url}/${a.file}`)).status, 500);
  t.equal((await fetch(`${e.url}/${a.file}`)).status, 500);
  t.equal((await fetch(`${e.url}/${a.file}`)).status, 200);
  t.equal(e.stats.faulted, 2);
});

t.test('bad build: degrades', async (t) => {
  const { d, c } = await node('degrades', '1.1.0', 'degrades', { degrade_after_ms: 1500, degrade_latency_ms: 300 });
  await waitReady(d);
  const timed = async (url: string) => {
    const t0 = performance.now();
    const r = await getJson(url);
    return { status: r?.status, ms: performance.now() - t0 };
  };
  const before = await timed(`${d.apiUrl}/api/consensus/status`);
  // No upper bound on the first request: a loaded machine may be slow too; only
  // the added latency (a sleep, so a lower bound) is a fact to assert.
  t.equal(before.status, 200, `answers at first (${before.ms.toFixed(0)} ms)`);
  await waitFor(() => jsonLines(c).some((l) => l.msg === 'request handling degraded (simulated regression)'), { what: 'degraded' });
  const after = await timed(`${d.apiUrl}/api/consensus/status`);
  t.equal(after.status, 200, 'still answers');
  t.ok(after.ms >= 300, `then every /api request is slower by the configured latency (${after.ms.toFixed(0)} ms)`);
  t.equal((await getJson(`${d.apiUrl}/health/ready`))?.status, 200, 'health is untouched: only a metrics comparison can tell');
  const metrics = parsePrometheus(await (await fetch(d.metricsUrl)).text());
  const sum = [...metrics.entries()]
    .filter(([k]) => /^guts_http_request_duration_seconds_sum\{.*\/api\/consensus\/status/.test(k))
    .reduce((a, [, v]) => a + v, 0);
  t.ok(sum >= 0.3, `the latency histogram shows it (${sum.toFixed(3)} s in total)`);
});
