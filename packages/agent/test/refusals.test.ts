import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { generateReleaseKeyPair, signArtifactDigest } from '@guts-upgrade/protocol';
import { spawnNode, stopNode, waitFor } from '@guts-upgrade/simulator';
import { makeRig, parseResult, sha, treeHash, UNSIGNED_HOST, upgradeArgs } from './helpers.js';

t.test('bad artifacts and paths are refused with nothing changed (an allowUnsigned host, url and sha256)', async (t) => {
  const keys = generateReleaseKeyPair();
  const other = generateReleaseKeyPair();
  const rig = await makeRig(t, { agent: UNSIGNED_HOST });
  await rig.startNode();
  const keyFile = path.join(rig.dir, 'release.pub');
  fs.writeFileSync(keyFile, keys.publicKeyPem);
  const binBefore = sha(rig.binary);
  // The running node appends blocks; compare what a refusal could touch: the binary, pack files, schema.
  const stable = () => Object.fromEntries(Object.entries(treeHash(rig.node.dataDir)).filter(([f]) => !f.startsWith('chain/')));
  const dataBefore = stable();
  const a = rig.artifact('1.0.1');

  const bad = await rig.cli(upgradeArgs({ ...a, sha256: 'f'.repeat(64) }));
  t.equal(bad.code, 1);
  t.equal(parseResult(bad.stdout).code, 'E_CHECKSUM');

  const down = await rig.cli(upgradeArgs({ ...a, version: '0.9.0' }));
  t.equal(parseResult(down.stdout).code, 'E_DOWNGRADE');

  const same = await rig.cli(upgradeArgs(rig.artifact('1.0.0')));
  t.equal(parseResult(same.stdout).code, 'E_SAME_VERSION');

  const skip = await rig.cli(upgradeArgs(rig.artifact('2.0.0'), ['--approve-major']));
  t.equal(parseResult(skip.stdout).code, 'E_CONFIG', 'major without a configured migration command');

  // The artifact is a 1.0.1 build, but the command claims 1.2.0.
  const mislabeled = await rig.cli(upgradeArgs({ ...a, version: '1.2.0' }));
  t.equal(parseResult(mislabeled.stdout).code, 'E_VERSION_MISMATCH');

  rig.writeConfig({ releasePublicKey: keyFile });
  const unsigned = await rig.cli(upgradeArgs(a));
  t.equal(parseResult(unsigned.stdout).code, 'E_SIGNATURE_MISSING');
  const wrongSig = await rig.cli(upgradeArgs(a, ['--signature', signArtifactDigest(a.sha256, other.privateKeyPem)]));
  t.equal(wrongSig.code, 1);
  t.equal(parseResult(wrongSig.stdout).code, 'E_SIGNATURE');

  t.equal(sha(rig.binary), binBefore, 'binary bytes unchanged');
  t.same(stable(), dataBefore, 'data dir unchanged');
  t.equal(await rig.healthVersion(), '1.0.0');
  t.notOk(fs.existsSync(`${rig.binary}.bak`), 'nothing installed');

  const good = await rig.cli(upgradeArgs(a, ['--signature', signArtifactDigest(a.sha256, keys.privateKeyPem)]));
  t.equal(good.code, 0, 'a correctly signed artifact is accepted');
  t.equal(await rig.healthVersion(), '1.0.1');
});

t.test('download resumes with Range after a cut connection; prepare stages for requireStaged (an allowUnsigned host)', async (t) => {
  const rig = await makeRig(t, { agent: UNSIGNED_HOST });
  await rig.startNode();
  const a = rig.artifact('1.0.1');
  const notStaged = await rig.cli(upgradeArgs(a, ['--require-staged']));
  t.equal(parseResult(notStaged.stdout).code, 'E_NOT_STAGED');
  await rig.server.close();
  const { startArtifactServer } = await import('@guts-upgrade/simulator');
  const cut = await startArtifactServer({ dir: path.join(rig.dir, 'artifacts'), faults: { cutAfterBytes: 200, cutFirst: 2 } });
  t.teardown(() => cut.close());
  const url = `${cut.url}/${path.basename(a.url)}`;
  const prep = await rig.cli(['prepare', '--to', '1.0.1', '--url', url, '--sha256', a.sha256, '--json']);
  t.equal(prep.code, 0, 'prepare succeeded despite cut connections');
  // The first two responses are cut 200 bytes in: every byte that arrived was
  // kept, so each retry asks from where the last one stopped.
  const size = fs.statSync(path.join(rig.dir, 'artifacts', path.basename(a.url))).size;
  t.ok(size > 200, `the artifact (${size} bytes) is longer than one cut`);
  t.same(
    cut.stats.rangeStarts,
    [200, 400].filter((at) => at < size),
    'resumed with Range from the bytes on disk',
  );
  t.equal(await rig.healthVersion(), '1.0.0', 'prepare leaves the node alone');
  const up = await rig.cli(upgradeArgs({ ...a, url }, ['--require-staged']));
  t.equal(up.code, 0);
  t.equal(await rig.healthVersion(), '1.0.1');
  // no rig.server to close twice
  rig.server.close = async () => undefined;
});

const isRoot = process.getuid?.() === 0;
t.test('disk full and backup I/O errors abort before the node is stopped', { skip: !isRoot && 'needs root for tmpfs / bind mounts' }, async (t) => {
  const rig = await makeRig(t, { dataSizeMb: 2 });
  await rig.startNode();
  const small = path.join(rig.dir, 'small');
  const ro = path.join(rig.dir, 'ro');
  fs.mkdirSync(small);
  fs.mkdirSync(ro);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', small]);
    execFileSync('mount', ['--bind', ro, ro]);
    execFileSync('mount', ['-o', 'remount,ro,bind', ro]);
  } catch (err) {
    t.pass(`skipped: cannot mount: ${(err as Error).message}`);
    return;
  }
  t.teardown(() => {
    for (const m of [small, ro])
      try {
        execFileSync('umount', [m]);
      } catch {
        /* not mounted */
      }
  });
  const pidBefore = rig.driver.pid();
  const a = rig.artifact('1.0.1');

  rig.writeConfig({ backup: { dir: small, retention: 2 } });
  const full = await rig.cli(upgradeArgs(a));
  t.equal(full.code, 1);
  t.equal(parseResult(full.stdout).code, 'E_DISK_SPACE');

  rig.writeConfig({ backup: { dir: path.join(ro, 'backups'), retention: 2 } });
  const io = await rig.cli(upgradeArgs(a));
  t.equal(io.code, 1);
  const res = parseResult(io.stdout);
  t.equal(res.code, 'E_BACKUP', res.message ?? '');
  t.notOk(
    res.evidence.checks.some((c: { name: string }) => c.name === 'start-ready'),
    'never reached start',
  );
  t.equal(rig.driver.pid(), pidBefore, 'the node was never stopped');
  t.equal(await rig.healthVersion(), '1.0.0');
});

t.test('a node started outside the agent (no pid it recorded) is refused as foreign, and left running untouched', async (t) => {
  const rig = await makeRig(t);
  // Started by hand, as an older tool would: the same binary and config, but no pid file.
  const byHand = spawnNode(rig.binary, rig.node.configPath, { env: { PATH: process.env.PATH } });
  t.teardown(() => stopNode(byHand));
  await waitFor(async () => (await fetch(`${rig.node.apiUrl}/health/ready`).catch(() => null))?.status === 200, { what: 'the hand-started node ready' });
  t.equal(rig.driver.pid(), null, 'the agent recorded no pid');
  const binBefore = sha(rig.binary);
  const r = await rig.cli(upgradeArgs(rig.artifact('1.1.0')));
  const res = parseResult(r.stdout);
  t.equal(res.outcome, 'failed');
  t.equal(res.code, 'E_FOREIGN_NODE', res.message ?? '');
  t.match(
    res.message,
    /guts-node 1\.0\.0 answers on http:\/\/127\.0\.0\.1:\d+, but the agent does not run it \(no live pid in .*guts-node\.pid\); nothing was changed/,
  );
  t.match(
    res.evidence?.checks.find((c) => c.name === 'node-is-ours'),
    { ok: false },
    'the check says so',
  );
  t.equal(sha(rig.binary), binBefore, 'the binary is untouched');
  t.equal(byHand.exitCode, null, 'the hand-started node still runs');
  t.equal(await rig.healthVersion(), '1.0.0');
  const doctor = await rig.cli(['doctor']);
  t.equal(doctor.code, 1, 'doctor fails the host');
  t.match(doctor.stdout, /guts-node 1\.0\.0 answers on \S+: it was started outside the agent/, 'and says why');
  t.match(doctor.stdout, /ss -ltnp 'sport = :\d+'/, 'with the command that finds the process');
});
