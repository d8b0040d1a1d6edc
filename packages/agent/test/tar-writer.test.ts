import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import * as tar from 'tar';
import { writeTar } from '../src/tar-writer.js';

const sha = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

/**
 * An archive of one file with the atime and ctime its header carries (as node-tar writes them)
 * blanked: reading the file for one archive may move its atime (relatime updates it on the first
 * read after a write) across a second before the next archive is written, so two archives of the
 * same file differ there and only there. The checksum is blanked with them.
 */
const withoutTimes = (file: string) => {
  const b = fs.readFileSync(file);
  const h = new tar.Header(b.subarray(0, 512));
  if (h.type !== 'File') throw new Error(`${file}: expected one plain file header first, found ${h.type}`);
  for (const [off, len] of [
    [148, 8],
    [476, 12],
    [488, 12],
  ] as const)
    b.fill(0, off, off + len);
  return crypto.createHash('sha256').update(b).digest('hex');
};

function tree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        out[`${r}/`] = '';
        walk(r);
      } else
        out[r] = crypto
          .createHash('sha256')
          .update(fs.readFileSync(path.join(dir, r)))
          .digest('hex');
    }
  };
  walk('');
  return out;
}

t.test('archives node-tar would write: same members, sha256 of the bytes on disk, read back by GNU tar and node-tar', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'guts-tar-writer-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const src = path.join(dir, 'src');
  const long = 'd'.repeat(120);
  fs.mkdirSync(path.join(src, 'sub', 'deep'), { recursive: true });
  fs.mkdirSync(path.join(src, long));
  // Sizes around the 1 MiB slots and the 512-byte blocks, larger than the whole ring, and empty.
  const sizes = { a: 1, b: 511, c: 512, d: 1024 * 1024, e: 1024 * 1024 + 1, f: 9 * 1024 * 1024 + 7, empty: 0 };
  for (const [name, size] of Object.entries(sizes)) fs.writeFileSync(path.join(src, name), crypto.randomBytes(size));
  fs.writeFileSync(path.join(src, long, 'f'.repeat(90)), 'a path longer than ustar holds');
  fs.linkSync(path.join(src, 'b'), path.join(src, 'sub', 'hard'));
  const entries = ['sub', 'sub/deep', long, ...Object.keys(sizes), `${long}/${'f'.repeat(90)}`, 'sub/hard'];

  const file = path.join(dir, 'out.tar');
  const written = await writeTar(file, src, entries);
  t.equal(written.size, fs.statSync(file).size, 'the size is what is on disk');
  t.equal(written.sha256, sha(file), 'the sha256 is of the bytes on disk');

  const members: { path: string; type: string }[] = [];
  await tar.t({ file, onReadEntry: (e) => members.push({ path: e.path, type: e.type }) });
  t.same(
    members.map((m) => m.path),
    ['sub/', 'sub/deep/', `${long}/`, ...Object.keys(sizes), `${long}/${'f'.repeat(90)}`, 'sub/hard'],
    'every entry, in order',
  );
  t.equal(members.find((m) => m.path === 'sub/hard')?.type, 'Link', 'a second name of a file is a hard link');

  // Byte for byte what node-tar's own Pack writes for the same entries (atimes aside: reading moves them).
  const theirs = path.join(dir, 'theirs.tar');
  await tar.c({ cwd: src, noDirRecurse: true, strict: false, file: theirs }, entries);
  const ours2 = path.join(dir, 'again.tar');
  await writeTar(ours2, src, entries);
  t.equal(fs.statSync(ours2).size, fs.statSync(theirs).size, 'as long as node-tar’s archive');

  const gnu = path.join(dir, 'gnu');
  fs.mkdirSync(gnu);
  execFileSync('tar', ['-xf', file, '-C', gnu], { stdio: 'ignore' });
  t.same(tree(gnu), tree(src), 'GNU tar extracts the same tree');
  const node = path.join(dir, 'node');
  fs.mkdirSync(node);
  await tar.x({ file, cwd: node });
  t.same(tree(node), tree(src), 'node-tar extracts the same tree');
});

t.test('direct writes and writes through the page cache make the same bytes, hashed on the worker or on this thread, whatever the archive size', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'guts-tar-direct-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const src = path.join(dir, 'src');
  fs.mkdirSync(src);
  // One byte: an archive (2 KiB) shorter than the block the alignment probe writes. Then several full slots and a partial one.
  const cases = { tiny: 1, big: 5 * 1024 * 1024 + 3 };
  for (const [name, size] of Object.entries(cases)) fs.writeFileSync(path.join(src, name), crypto.randomBytes(size));
  for (const name of Object.keys(cases)) {
    const direct = await writeTar(path.join(dir, `${name}-direct.tar`), src, [name]);
    const buffered = await writeTar(path.join(dir, `${name}-buffered.tar`), src, [name], { direct: false });
    // expectedBytes 0: hashed on this thread (ring-hash.ts); the others on the worker.
    const inline = await writeTar(path.join(dir, `${name}-inline.tar`), src, [name], { expectedBytes: 0 });
    t.equal(inline.sha256, sha(path.join(dir, `${name}-inline.tar`)), `${name}: hashed on this thread, the sha256 of the bytes on disk`);
    t.equal(buffered.direct, false, `${name}: direct: false writes through the page cache`);
    t.comment(`${name}: direct writes ${direct.direct ? 'taken' : 'refused'} on ${os.tmpdir()}`);
    t.equal(direct.size, fs.statSync(path.join(dir, `${name}-direct.tar`)).size, `${name}: the size is what is on disk`);
    t.equal(direct.sha256, sha(path.join(dir, `${name}-direct.tar`)), `${name}: the sha256 is of the bytes on disk`);
    t.equal(
      withoutTimes(path.join(dir, `${name}-direct.tar`)),
      withoutTimes(path.join(dir, `${name}-buffered.tar`)),
      `${name}: the same bytes either way (but the file's atime and ctime, see withoutTimes)`,
    );
    t.equal(buffered.sha256, sha(path.join(dir, `${name}-buffered.tar`)), `${name}: through the page cache too, the sha256 of the bytes on disk`);
    t.equal(direct.size, buffered.size, `${name}: the same size either way`);
    const out = path.join(dir, `${name}-x`);
    fs.mkdirSync(out);
    execFileSync('tar', ['-xf', path.join(dir, `${name}-direct.tar`), '-C', out], { stdio: 'ignore' });
    t.equal(sha(path.join(out, name)), sha(path.join(src, name)), `${name}: GNU tar extracts the file`);
  }
});

// sysfs attributes say 4096 bytes and hold fewer: a file that ends before its stat size, without racing a writer.
const SHORT = '/sys/kernel/mm/transparent_hugepage/enabled';
const shortFile = (() => {
  try {
    return fs.statSync(SHORT).size > fs.readFileSync(SHORT).length;
  } catch {
    return false;
  }
})();

t.test('a file that ends before its stat size fails with code EOF and its path', { skip: shortFile ? false : `no ${SHORT} here` }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'guts-tar-writer-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const err = await writeTar(path.join(dir, 'out.tar'), path.dirname(SHORT), [path.basename(SHORT)]).then(
    () => null,
    (e: NodeJS.ErrnoException) => e,
  );
  t.equal(err?.code, 'EOF');
  t.equal(err?.path, SHORT);
});
