import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { BackupStore } from '../src/backup-store.js';
import { resolveConfig } from '../src/config.js';
import { Journal } from '../src/journal.js';
import { makeRig, sha, treeHash } from './helpers.js';

t.test('base + delta archives extract byte-identically with GNU tar, deletions included; restore', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'guts-agent-backup-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const data = path.join(dir, 'data');
  fs.mkdirSync(path.join(data, 'objects'), { recursive: true });
  fs.mkdirSync(path.join(data, 'chain'));
  for (let i = 0; i < 3; i++) fs.writeFileSync(path.join(data, 'objects', `p${i}.pack`), Buffer.alloc(50_000 + i, i + 1));
  fs.writeFileSync(path.join(data, 'chain', 'blocks.jsonl'), '{"h":1}\n');
  fs.mkdirSync(path.join(dir, 'bin'));
  fs.writeFileSync(path.join(dir, 'bin', 'guts-node'), '#!/bin/sh\necho guts-node 1.0.0\n', { mode: 0o755 });
  fs.writeFileSync(path.join(dir, 'config.yaml'), 'name: v0\n');
  const config = resolveConfig(
    { nodeId: 'v0', node: { binary: 'bin/guts-node', dataDir: 'data', config: 'config.yaml' }, stateDir: 'state', service: { driver: 'process' } },
    {},
    dir,
  );
  const journal = new Journal(config.stateDir);
  t.teardown(() => journal.close());
  const store = new BackupStore(config, journal);

  await store.createBase('b1', null, '1.0.0');
  // Changes while "the node runs": append, rewrite, add, delete.
  fs.appendFileSync(path.join(data, 'chain', 'blocks.jsonl'), '{"h":2}\n');
  fs.writeFileSync(path.join(data, 'objects', 'p1.pack'), Buffer.alloc(1234, 9));
  fs.mkdirSync(path.join(data, 'new'));
  fs.writeFileSync(path.join(data, 'new', 'x.bin'), 'x');
  fs.rmSync(path.join(data, 'objects', 'p2.pack'));
  const row = await store.seal('b1');
  t.equal(row.status, 'complete');
  t.same(row.meta.deleted, ['objects/p2.pack']);
  const expected = treeHash(data);

  const out = path.join(dir, 'gnu');
  fs.mkdirSync(out);
  execFileSync('tar', ['-xf', path.join(store.dirOf('b1'), 'data-base.tar'), '-C', out]);
  execFileSync('tar', ['-xf', path.join(store.dirOf('b1'), 'data-delta.tar'), '-C', out]);
  for (const f of row.meta.deleted!) fs.rmSync(path.join(out, f));
  t.same(treeHash(out), expected, 'GNU tar: base + delta - deleted == data dir');
  const binOut = path.join(dir, 'gnu-bin');
  fs.mkdirSync(binOut);
  execFileSync('tar', ['-xf', path.join(store.dirOf('b1'), 'binary.tar'), '-C', binOut]);
  t.equal(sha(path.join(binOut, 'guts-node')), sha(config.node.binary), 'binary archive identical');
  for (const e of [row.meta.binary!, row.meta.config!, row.meta.dataBase!, row.meta.dataDelta!]) {
    t.equal(sha(path.join(store.dirOf('b1'), e.file)), e.sha256, `catalogue checksum of ${e.file}`);
  }

  // Trash the data dir, restore from the backup.
  fs.rmSync(path.join(data, 'objects'), { recursive: true });
  fs.writeFileSync(path.join(data, 'junk'), 'junk');
  await store.restoreData('b1');
  t.same(treeHash(data), expected, 'restore gives the sealed state back');

  // A tampered archive is refused.
  fs.appendFileSync(path.join(store.dirOf('b1'), 'data-delta.tar'), 'x');
  await t.rejects(store.restoreData('b1'), { code: 'E_RESTORE' });
});

t.test('backup CLI: create, list, restore; retention', async (t) => {
  const rig = await makeRig(t, { agent: { backup: { retention: 1 } } });
  await rig.startNode();
  const c1 = await rig.cli(['backup', 'create']);
  t.equal(c1.code, 0, c1.stderr);
  const c2 = await rig.cli(['backup', 'create', '--json']);
  t.equal(c2.code, 0);
  const id2 = JSON.parse(c2.stdout).id as string;
  const list = JSON.parse((await rig.cli(['backup', 'list', '--json'])).stdout) as { id: string }[];
  t.same(
    list.map((b) => b.id),
    [id2],
    'retention 1 keeps the newest',
  );
  const before = sha(rig.binary);
  fs.writeFileSync(rig.binary, '#!/bin/sh\nexit 1\n');
  const r = await rig.cli(['backup', 'restore', id2]);
  t.equal(r.code, 0, r.stderr);
  t.equal(sha(rig.binary), before, 'binary restored');
  t.equal(await rig.healthVersion(), '1.0.0');
  const missing = await rig.cli(['backup', 'restore', 'nope']);
  t.equal(missing.code, 1);
});
