import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import {
  buildArtifacts,
  createCluster,
  findArtifact,
  getJson,
  jsonLines,
  readSchema,
  runCommand,
  spawnNode,
  stopNode,
  waitFor,
  waitReady,
  type HealthBody,
  type SimChild,
} from '../src/index.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sim-schema-'));
const kids: SimChild[] = [];
t.teardown(async () => {
  await Promise.all(kids.map((k) => stopNode(k)));
  fs.rmSync(tmp, { recursive: true, force: true });
});

const m = buildArtifacts({ outDir: path.join(tmp, 'artifacts') });
const bin = (v: string) => findArtifact(m, v).path;

t.test('schema: minor auto-migration, major refusal until migrate, newer refusal, verify', async (t) => {
  const [d] = await createCluster({ n: 1, dir: path.join(tmp, 'one'), timings: { startup_delay_ms: 50, migrate_ms: 300, block_interval_ms: 100 } });
  const init = await runCommand(bin('1.0.0'), ['init', '--data-dir', d!.dataDir, '--size-mb', '1']);
  t.equal(init.code, 0, init.stderr);
  t.equal(readSchema(d!.dataDir)?.schema, 100);

  const run = async (v: string) => {
    const c = spawnNode(bin(v), d!.configPath);
    kids.push(c);
    return c;
  };

  // 1.0.0 data under 1.1.0: migrated at start-up.
  let c = await run('1.1.0');
  await waitReady(d!, 10_000);
  const lines = jsonLines(c);
  t.ok(
    lines.find((l) => l.msg === 'migrating storage schema' && l.from === 100 && l.to === 101),
    'migration start logged',
  );
  t.ok(
    lines.find((l) => l.msg === 'storage schema migrated' && l.to === 101),
    'migration end logged',
  );
  t.equal(readSchema(d!.dataDir)?.schema, 101);
  t.equal(await stopNode(c), 0);

  // Binary-only rollback over migrated data: refused.
  c = await run('1.0.1');
  t.equal((await c.exited).code, 2, 'older binary refuses newer schema');
  t.ok(jsonLines(c).some((l) => l.level === 'error' && /newer/.test(String(l.msg))));

  // Next major without migrate: refused, naming the command.
  c = await run('2.0.0');
  t.equal((await c.exited).code, 2, 'major refuses to start');
  t.ok(
    jsonLines(c).some((l) => l.level === 'error' && String(l.msg).includes('guts-node migrate')),
    'error names guts-node migrate',
  );
  t.equal(readSchema(d!.dataDir)?.schema, 101, 'data untouched');

  const bad = await runCommand(bin('2.0.0'), ['migrate', '--from', '2.0.0', '--to', '3.0.0', '--data-dir', d!.dataDir]);
  t.not(bad.code, 0, 'migrate with a wrong --from fails');
  const mig = await runCommand(bin('2.0.0'), ['migrate', '--from', '1.1.0', '--to', '2.0.0', '--data-dir', d!.dataDir], {
    env: { GUTS_SIM_MIGRATE_MS: '100' },
  });
  t.equal(mig.code, 0, mig.stdout + mig.stderr);
  t.match(mig.stdout, /migration progress/);
  t.equal(readSchema(d!.dataDir)?.schema, 200);

  c = await run('2.0.0');
  await waitReady(d!, 10_000);
  t.equal((await getJson<HealthBody>(`${d!.apiUrl}/health`))?.body.version, '2.0.0');
  t.equal(await stopNode(c), 0);

  c = await run('1.2.0');
  t.equal((await c.exited).code, 2, '1.2.0 refuses schema 200');

  // verify
  const ok = await runCommand(bin('2.0.0'), ['verify', '--data-dir', d!.dataDir, '--full']);
  t.equal(ok.code, 0, ok.stdout + ok.stderr);
  const pack = path.join(d!.dataDir, 'objects', fs.readdirSync(path.join(d!.dataDir, 'objects'))[0]!);
  const fd = fs.openSync(pack, 'r+');
  fs.writeSync(fd, Buffer.from('flipped'), 0, 7, 1000);
  fs.closeSync(fd);
  t.equal((await runCommand(bin('2.0.0'), ['verify', '--data-dir', d!.dataDir])).code, 0, 'quick verify only checks the schema');
  const full = await runCommand(bin('2.0.0'), ['verify', '--data-dir', d!.dataDir, '--full']);
  t.not(full.code, 0, 'verify --full detects corruption');
  t.match(full.stderr, /sha256 mismatch/);
  fs.writeFileSync(path.join(d!.dataDir, 'schema.json'), 'garbage');
  t.not((await runCommand(bin('2.0.0'), ['verify', '--data-dir', d!.dataDir])).code, 0, 'verify detects a corrupt schema file');
  await waitFor(() => true);
});
