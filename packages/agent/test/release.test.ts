/**
 * Releases resolved through The Update Framework, against a real agent (the
 * CLI as a child, a simulated node run by the process driver) and a real HTTP
 * server publishing repositories written by `guts-upgrade release`. Each TUF
 * attack is refused with its named code and nothing changes on the host.
 * Each scenario gets its own repository and agent cache (its own trust
 * history), so none depends on what another left trusted.
 */
import fs from 'node:fs';
import path from 'node:path';
import t, { type Test as Tap } from 'tap';
import { findArtifact } from '@guts-upgrade/simulator';
import { makeRig, parseResult, sha, treeHash } from './helpers.js';
import { releaseCli, Repo, serveDir, type RepoServer } from './release-fixture.js';

const HOUR = 3_600_000;

t.test('TUF releases: attacks refused with nothing changed, then an upgrade by version alone', async (t) => {
  const rig = await makeRig(t);
  await rig.startNode();
  const reposDir = path.join(rig.dir, 'repos');
  fs.mkdirSync(reposDir);
  const srv: RepoServer = await serveDir(reposDir);
  t.teardown(() => srv.close());
  const v101 = findArtifact(rig.manifest, '1.0.1');
  const evil = findArtifact(rig.manifest, '1.1.0', 'exits');

  const binBefore = sha(rig.binary);
  // The running node appends blocks; what a refusal could touch is the binary, pack files and schema.
  const stable = () => Object.fromEntries(Object.entries(treeHash(rig.node.dataDir)).filter(([f]) => !f.startsWith('chain/')));
  const dataBefore = stable();
  const staged = () => (fs.existsSync(rig.config.stagingDir) ? fs.readdirSync(rig.config.stagingDir) : []);

  /** A fresh repository (targets threshold 2) holding 1.0.1, and the agent pointed at it with an empty cache. */
  const scenario = (name: string) => {
    const repo = new Repo(path.join(reposDir, name));
    releaseCli(['init', '--dir', repo.dir, '--threshold-targets', '2']);
    releaseCli(['add', '--dir', repo.dir, '--file', v101.path, '--version', '1.0.1']);
    rig.writeConfig({ release: { repository: `${srv.url}/${name}`, root: repo.metaPath('root'), cacheDir: path.join(rig.dir, `tuf-${name}`) } });
    return { repo, at: (p: string) => `/${name}/${p}` };
  };
  /** What an attacker without the targets keys serves: forged targets, re-signed snapshot and timestamp, another 1.0.1 file. */
  const serveForged = (s: { at(p: string): string }, forged: { targets: Buffer; snapshot: Buffer; timestamp: Buffer }, file: Buffer) => {
    srv.overrides.set(s.at('metadata/targets.json'), forged.targets);
    srv.overrides.set(s.at('metadata/snapshot.json'), forged.snapshot);
    srv.overrides.set(s.at('metadata/timestamp.json'), forged.timestamp);
    srv.overrides.set(s.at('targets/guts-node/1.0.1/guts-node'), file);
  };
  const upgrade = async (version: string, extra: string[] = []) => {
    const r = await rig.cli(['upgrade', '--to', version, '--json', ...extra]);
    return { exit: r.code, result: parseResult(r.stdout) };
  };
  const refused = async (t: Tap, code: string, version = '1.0.1', extra: string[] = []) => {
    const { exit, result } = await upgrade(version, extra);
    t.equal(exit, 1, 'exit 1: failed, node unchanged');
    t.equal(result.code, code, result.message ?? code);
    t.equal(sha(rig.binary), binBefore, 'binary bytes unchanged');
    t.same(stable(), dataBefore, 'data dir unchanged');
    t.equal(await rig.healthVersion(), '1.0.0', 'still running 1.0.0');
    t.same(staged(), [], 'nothing kept in staging');
    return result;
  };

  await t.test('a version the repository does not sign', async (t) => {
    scenario('unknown');
    await refused(t, 'E_RELEASE_UNKNOWN', '1.0.2');
  });

  await t.test('arbitrary software: the target file replaced on the server', async (t) => {
    const s = scenario('arbitrary');
    srv.overrides.set(s.at('targets/guts-node/1.0.1/guts-node'), fs.readFileSync(evil.path));
    await refused(t, 'E_RELEASE_TAMPERED');
  });

  await t.test('endless data: the server sends past the signed length', async (t) => {
    const s = scenario('endless');
    srv.overrides.set(s.at('targets/guts-node/1.0.1/guts-node'), 'endless');
    await refused(t, 'E_RELEASE_TAMPERED');
    t.ok(srv.endlessSent.length > 0 && srv.endlessSent.every((n) => n < 256 * 1024 * 1024), 'the agent hung up long before the server stopped');
  });

  await t.test('rollback: an older timestamp and snapshot served after newer ones were seen', async (t) => {
    const s = scenario('rollback');
    const oldTimestamp = s.repo.bytes('timestamp');
    const oldSnapshot = s.repo.bytes('snapshot');
    releaseCli(['add', '--dir', s.repo.dir, '--file', evil.path, '--version', '1.1.0']);
    await refused(t, 'E_RELEASE_UNKNOWN', '1.0.2'); // the agent now trusts the newer state
    srv.overrides.set(s.at('metadata/timestamp.json'), oldTimestamp);
    srv.overrides.set(s.at('metadata/snapshot.json'), oldSnapshot);
    await refused(t, 'E_RELEASE_ROLLBACK');
  });

  await t.test('indefinite freeze: a validly signed but expired timestamp', async (t) => {
    const s = scenario('freeze');
    const forged = s.repo.onlineResign(
      s.repo.bytes('targets'),
      s.repo.read('targets').signed.version,
      new Date(Date.now() - HOUR).toISOString().replace(/\.\d+Z$/, 'Z'),
    );
    srv.overrides.set(s.at('metadata/snapshot.json'), forged.snapshot);
    srv.overrides.set(s.at('metadata/timestamp.json'), forged.timestamp);
    await refused(t, 'E_RELEASE_EXPIRED');
  });

  await t.test('mix-and-match: a new timestamp served with the previous snapshot', async (t) => {
    const s = scenario('mix');
    const oldSnapshot = s.repo.bytes('snapshot');
    releaseCli(['add', '--dir', s.repo.dir, '--file', evil.path, '--version', '1.1.0']);
    srv.overrides.set(s.at('metadata/snapshot.json'), oldSnapshot);
    await refused(t, 'E_RELEASE_INCONSISTENT');
  });

  await t.test('tampered targets metadata, re-published with the online (snapshot, timestamp) keys', async (t) => {
    const s = scenario('tampered-targets');
    const targets = s.repo.read('targets');
    const evilBytes = fs.readFileSync(evil.path);
    const entry = (targets.signed.targets as Record<string, { length: number; hashes: Record<string, string> }>)['guts-node/1.0.1/guts-node']!;
    entry.length = evilBytes.length;
    entry.hashes = Repo.meta(1, evilBytes).hashes;
    // The targets signatures stay as they were: the attacker has no targets key.
    const bytes = Buffer.from(`${JSON.stringify(targets, null, 2)}\n`);
    const forged = s.repo.onlineResign(bytes, targets.signed.version);
    serveForged(s, forged, evilBytes);
    await refused(t, 'E_RELEASE_SIGNATURE');
  });

  await t.test('a key below threshold: targets signed by 1 of the 2 targets keys', async (t) => {
    const s = scenario('threshold');
    const targets = s.repo.read('targets');
    const evilBytes = fs.readFileSync(evil.path);
    targets.signed.version += 1;
    (targets.signed.targets as Record<string, unknown>)['guts-node/1.0.1/guts-node'] = {
      length: evilBytes.length,
      hashes: Repo.meta(1, evilBytes).hashes,
      custom: { version: '1.0.1', pathKind: 'patch', migration: 'none' },
    };
    const bytes = Repo.sign(targets, s.repo.keys('targets').slice(0, 1));
    const forged = s.repo.onlineResign(bytes, targets.signed.version);
    serveForged(s, forged, evilBytes);
    await refused(t, 'E_RELEASE_SIGNATURE');
  });

  await t.test("the release's own policy (min-from), and a coordinator's sha256 that is not the signed one", async (t) => {
    const s = scenario('policy');
    releaseCli(['add', '--dir', s.repo.dir, '--file', findArtifact(rig.manifest, '1.1.0').path, '--version', '1.1.0', '--min-from', '1.0.1']);
    const r = await refused(t, 'E_RELEASE_POLICY', '1.1.0');
    t.match(r.message ?? '', /1\.0\.1 or later only/);
    await refused(t, 'E_RELEASE_MISMATCH', '1.0.1', ['--sha256', 'f'.repeat(64)]);
  });

  await t.test('happy path: release init/add, then the agent upgrades by version alone', async (t) => {
    scenario('happy');
    const { exit, result } = await upgrade('1.0.1');
    t.equal(exit, 0, result.message ?? 'exit 0');
    t.equal(result.outcome, 'succeeded');
    t.equal(sha(rig.binary), v101.sha256, 'the signed binary is installed');
    t.equal(await rig.healthVersion(), '1.0.1');
    t.ok(
      result.evidence.checks.some((c) => c.name === 'release' && c.ok),
      'the result shows the release check',
    );
  });
});
