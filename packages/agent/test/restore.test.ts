/**
 * A restore cannot make things worse: a catalogue or archive that reaches past
 * the data dir is refused with nothing changed, and a restore that fails part
 * way puts back what was there and restarts the node if it was running.
 * Real tar archives, a real data dir, a real node under the process driver.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { BackupStore } from '../src/backup-store.js';
import { resolveConfig } from '../src/config.js';
import { Journal, type BackupMeta, type BackupRow } from '../src/journal.js';
import { makeRig, sha, treeHash } from './helpers.js';

/** Everything under `dir` but `skip`: what a refused restore must leave as it was. */
function everything(dir: string, skip = 'state'): Record<string, string> {
  return Object.fromEntries(Object.entries(treeHash(dir)).filter(([f]) => !f.startsWith(`${skip}/`)));
}

t.test('catalogue entries and archive members outside the data dir are refused; nothing changes', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'guts-restore-unsafe-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const data = path.join(dir, 'data');
  fs.mkdirSync(path.join(data, 'objects'), { recursive: true });
  fs.writeFileSync(path.join(data, 'objects', 'p0.pack'), Buffer.alloc(5000, 1));
  fs.writeFileSync(path.join(data, 'objects', 'p1.pack'), Buffer.alloc(5000, 2));
  fs.mkdirSync(path.join(dir, 'bin'));
  fs.writeFileSync(path.join(dir, 'bin', 'guts-node'), '#!/bin/sh\necho guts-node 1.0.0\n', { mode: 0o755 });
  fs.writeFileSync(path.join(dir, 'config.yaml'), 'name: v0\n');
  // Beside the data dir: what a `../victim` entry would reach.
  fs.writeFileSync(path.join(dir, 'victim'), 'must survive');
  const config = resolveConfig(
    { nodeId: 'v0', node: { binary: 'bin/guts-node', dataDir: 'data', config: 'config.yaml' }, stateDir: 'state', service: { driver: 'process' } },
    {},
    dir,
  );
  const journal = new Journal(config.stateDir);
  t.teardown(() => journal.close());
  const store = new BackupStore(config, journal);
  await store.createBase('b1', null, '1.0.0');
  fs.rmSync(path.join(data, 'objects', 'p1.pack'));
  const good = await store.seal('b1');
  t.same(good.meta.deleted, ['objects/p1.pack']);
  // The data dir moves on after the backup: a refused restore must leave this state.
  fs.writeFileSync(path.join(data, 'objects', 'p2.pack'), 'after the backup');
  const before = everything(dir);

  const withMeta = (patch: Partial<BackupMeta>): BackupRow => {
    const row: BackupRow = { ...good, meta: { ...good.meta, ...patch } };
    journal.putBackup(row);
    return row;
  };
  const refused = async (what: string, patch: Partial<BackupMeta>, reason: RegExp, op: (s: BackupStore) => Promise<unknown> = (s) => s.restoreData('b1')) => {
    withMeta(patch);
    await t.rejects(op(store), { code: 'E_RESTORE_UNSAFE', message: reason }, what);
    t.same(everything(dir), before, `${what}: nothing changed (data dir, victim, binary, config; no leftovers)`);
  };

  await refused(
    'a deleted entry climbing out',
    { deleted: ['objects/p1.pack', '../victim'] },
    /deleted entry "\.\.\/victim" climbs out with \.\. \(outside the data dir\)/,
  );
  await refused('an absolute deleted entry', { deleted: [path.join(dir, 'victim')] }, /deleted entry .* is absolute/);
  await refused('a deleted entry naming the data dir itself', { deleted: ['./'] }, /names the root itself/);
  await refused('a file list entry climbing out', { files: { ...good.meta.files, '../victim': 12 } }, /file list entry "\.\.\/victim" climbs out/);
  await refused('another data dir', { dataDir: dir }, /the data dir .* is not the configured one/);
  await refused('another binary path', { binaryPath: path.join(dir, 'victim') }, /the binary .* is not the configured one/, (s) => s.restoreBinary('b1'));
  await refused(
    'an archive outside the backup dir',
    { dataBase: { ...good.meta.dataBase!, file: '../../victim' } },
    /archive dataBase "\.\.\/\.\.\/victim" is not a file name/,
  );

  // Archives whose own members reach out, catalogued with their true checksums (whoever wrote them could write the catalogue too).
  const craft = (name: string, args: string[]) => {
    const file = path.join(store.dirOf('b1'), name);
    execFileSync('tar', ['-cf', file, ...args], { stdio: 'ignore' });
    return { file: name, sha256: sha(file), size: fs.statSync(file).size };
  };
  fs.mkdirSync(path.join(dir, 'src'));
  fs.writeFileSync(path.join(dir, 'src', 'escape'), 'escaped');
  fs.symlinkSync(path.join(dir, 'victim'), path.join(dir, 'src', 'link'));
  const climbing = craft('climbing.tar', ['-P', '--transform', 's,^,../,', '-C', path.join(dir, 'src'), 'escape']);
  const symlink = craft('symlink.tar', ['-C', path.join(dir, 'src'), 'link']);
  const absolute = craft('absolute.tar', ['-P', path.join(dir, 'src', 'escape')]);
  const before2 = everything(dir);
  for (const [what, entry, reason] of [
    ['a member climbing out', climbing, /archive "climbing\.tar" has a member "\.\.\/escape" climbs out/],
    ['a symlink member', symlink, /archive "symlink\.tar" has a member "link" is a SymbolicLink/],
    ['an absolute member', absolute, /archive "absolute\.tar" has a member ".*" is absolute/],
  ] as const) {
    withMeta({ dataDelta: entry });
    await t.rejects(store.restoreData('b1'), { code: 'E_RESTORE_UNSAFE', message: reason }, what);
    t.same(everything(dir), before2, `${what}: nothing changed`);
    t.notOk(fs.existsSync(path.join(dir, 'escape')), `${what}: nothing landed beside the data dir`);
  }

  // A restore that fails after extracting (the file list disagrees) leaves the data dir and no extraction dir behind.
  const p0 = good.meta.files!['objects/p0.pack']!;
  withMeta({ files: { ...good.meta.files, 'objects/p0.pack': p0 + 1 } });
  await t.rejects(store.restoreData('b1'), { code: 'E_RESTORE', message: /restored objects\/p0\.pack does not match the catalogue/ });
  t.same(everything(dir), before2, 'a failed restore changes nothing');

  journal.putBackup(good);
  await store.restoreData('b1');
  t.notOk(fs.existsSync(path.join(data, 'objects', 'p2.pack')), 'the genuine catalogue restores');
  t.equal(fs.readFileSync(path.join(dir, 'victim'), 'utf8'), 'must survive');
});

t.test('backup restore CLI: a failed restore puts back binary, config and data and restarts the node that ran', async (t) => {
  const rig = await makeRig(t, { agent: { backup: { retention: 5 } } });
  await rig.startNode();
  const dataDir = rig.node.dataDir;
  // The node appends blocks as it runs: compare what a restore, not the node, would change.
  const stable = () => Object.fromEntries(Object.entries(treeHash(dataDir)).filter(([f]) => !f.startsWith('chain/')));
  const leftovers = () => [
    ...fs.readdirSync(path.dirname(dataDir)).filter((f) => /\.(restore|replaced)-/.test(f)),
    ...fs.readdirSync(rig.config.stateDir).filter((f) => f.startsWith('restore-')),
  ];
  const created = await rig.cli(['backup', 'create', '--json']);
  t.equal(created.code, 0, created.stderr);
  const id = JSON.parse(created.stdout).id as string;
  const catalogued = () => {
    const j = new Journal(rig.config.stateDir);
    try {
      return j.getBackup(id)!;
    } finally {
      j.close();
    }
  };
  const recatalogue = (row: BackupRow) => {
    const j = new Journal(rig.config.stateDir);
    j.putBackup(row);
    j.close();
  };
  const good = catalogued();

  // Since the backup: a local build of the binary, an edited node config, a new data file.
  fs.appendFileSync(rig.binary, '\n// local build\n');
  fs.appendFileSync(rig.node.configPath, '# local edit\n');
  fs.writeFileSync(path.join(dataDir, 'after-backup.txt'), 'written after the backup');
  const binary = sha(rig.binary);
  const nodeConfig = fs.readFileSync(rig.node.configPath, 'utf8');
  const data = stable();

  // 1. The data does not match its catalogue once extracted: after the node stopped and binary and config were restored.
  const [someFile, size] = Object.entries(good.meta.files!).find(([f]) => !f.startsWith('chain/'))!;
  recatalogue({ ...good, meta: { ...good.meta, files: { ...good.meta.files, [someFile]: size + 1 } } });
  const pid = rig.driver.pid();
  const r1 = await rig.cli(['backup', 'restore', id]);
  t.equal(r1.code, 1, 'exit 1');
  t.match(
    r1.stderr,
    /E_RESTORE: restore of \S+ failed while restoring the files \(.*does not match the catalogue.*\); the previous binary, config and data dir were put back and the node started again/,
  );
  t.equal(sha(rig.binary), binary, 'the binary is the one that was there');
  t.equal(fs.readFileSync(rig.node.configPath, 'utf8'), nodeConfig, 'the node config is the one that was there');
  t.same(stable(), data, 'the data dir is the one that was there');
  t.not(rig.driver.pid(), null, 'the node runs');
  t.not(rig.driver.pid(), pid, 'started again by the restore');
  t.equal(await rig.healthVersion(), '1.0.0', 'and answers');
  t.same(leftovers(), [], 'no extraction dir, replaced dir or kept copies left');

  // 2. Everything restores, but the restored node does not start: the swapped-in data dir is undone too.
  recatalogue(good);
  const broken = path.join(rig.dir, 'broken-guts-node');
  fs.writeFileSync(broken, '#!/bin/sh\nexit 1\n', { mode: 0o755 });
  const localBuild = fs.readFileSync(rig.binary);
  fs.copyFileSync(broken, rig.binary);
  const createdBroken = await rig.cli(['backup', 'create', '--json']);
  t.equal(createdBroken.code, 0, createdBroken.stderr);
  const brokenId = JSON.parse(createdBroken.stdout).id as string;
  fs.writeFileSync(rig.binary, localBuild);
  fs.writeFileSync(path.join(dataDir, 'after-second-backup.txt'), 'also kept');
  const data2 = stable();
  const r2 = await rig.cli(['backup', 'restore', brokenId]);
  t.equal(r2.code, 1, 'exit 1');
  t.match(
    r2.stderr,
    /E_RESTORE: restore of \S+ failed while starting the restored node \(E_START: guts-node exited.*\); the previous binary, config and data dir were put back and the node started again/,
  );
  t.equal(sha(rig.binary), binary, 'the working binary is back');
  t.same(stable(), data2, 'the data dir from before the restore is back');
  t.equal(await rig.healthVersion(), '1.0.0', 'the node runs and answers');
  t.same(leftovers(), []);

  // 3. A catalogue reaching out of the data dir: refused before the node is touched.
  const victim = path.join(path.dirname(dataDir), 'victim');
  fs.writeFileSync(victim, 'must survive');
  recatalogue({ ...good, meta: { ...good.meta, deleted: ['../victim'] } });
  const running = rig.driver.pid();
  const r3 = await rig.cli(['backup', 'restore', id]);
  t.equal(r3.code, 1);
  t.match(r3.stderr, /E_RESTORE_UNSAFE: backup \S+: deleted entry "\.\.\/victim" climbs out/);
  t.equal(rig.driver.pid(), running, 'the node was not stopped');
  t.equal(fs.readFileSync(victim, 'utf8'), 'must survive');
  t.same(stable(), data2, 'the data dir is untouched');

  // 4. A node that was not running stays stopped when a restore fails, with everything put back.
  await rig.driver.stop();
  recatalogue({ ...good, meta: { ...good.meta, files: { ...good.meta.files, [someFile]: size + 1 } } });
  const stopped = stable();
  const r4 = await rig.cli(['backup', 'restore', id]);
  t.equal(r4.code, 1);
  t.match(r4.stderr, /were put back; the node was not running before and stays stopped/);
  t.equal(rig.driver.pid(), null, 'still stopped');
  t.equal(sha(rig.binary), binary);
  t.same(stable(), stopped);
  t.same(leftovers(), []);

  // And the genuine backup restores: the node comes back on the backed-up files.
  recatalogue(good);
  await rig.startNode();
  const r5 = await rig.cli(['backup', 'restore', id]);
  t.equal(r5.code, 0, r5.stderr);
  t.not(sha(rig.binary), binary, 'the backed-up binary is in place');
  t.notOk(fs.existsSync(path.join(dataDir, 'after-backup.txt')), 'the backed-up data is in place');
  t.equal(await rig.healthVersion(), '1.0.0');
  t.same(leftovers(), []);
});
