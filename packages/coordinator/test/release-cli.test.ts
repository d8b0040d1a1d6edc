/** `guts-upgrade release`: the offline release tool's command line, exit codes and the repository it writes. */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { EXIT } from '../src/cli.js';
import { cli } from './run-cli.js';

function tmp(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'guts-release-cli-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const meta = (dir: string, name: string) => JSON.parse(fs.readFileSync(path.join(dir, 'metadata', `${name}.json`), 'utf8'));

t.test('help lists the subcommands and their flags', async (t) => {
  const top = await cli(['--help']);
  t.equal(top.code, EXIT.OK);
  t.match(top.out, /release/);
  const r = await cli(['release', '--help']);
  t.equal(r.code, EXIT.OK);
  t.match(r.out, /init/);
  t.match(r.out, /add/);
  t.match(r.out, /timestamp/);
  const add = await cli(['release', 'add', '--help']);
  for (const flag of ['--dir', '--keys-dir', '--file', '--image', '--version', '--path-kind', '--migration', '--min-from', '--expires-targets'])
    t.match(add.out, flag);
  const init = await cli(['release', 'init', '--help']);
  for (const flag of ['--threshold-root', '--threshold-targets', '--keys', '--expires-root', '--expires-timestamp']) t.match(init.out, flag);
});

t.test('usage errors exit 2 with the reason', async (t) => {
  const dir = tmp(t);
  const cases: [string[], RegExp][] = [
    [['release', 'init'], /--dir/],
    [['release', 'init', '--dir', dir, '--threshold-root', '0'], /positive integer/],
    [['release', 'init', '--dir', dir, '--expires-timestamp', 'soon'], /not a lifetime/],
    [['release', 'init', '--dir', path.join(dir, 'r'), '--threshold-targets', '3', '--keys', '2'], /below --threshold-targets 3/],
    [['release', 'init', '--dir', path.join(dir, 'r'), '--keys-dir', path.join(dir, 'r', 'keys')], /inside --dir/],
    [['release', 'add', '--dir', dir, '--file', 'x', '--version', '1.1'], /not a valid semver/],
    [['release', 'add', '--dir', dir, '--file', 'x', '--version', '1.1.0', '--path-kind', 'huge'], /Allowed choices/],
    [['release', 'frobnicate'], /unknown command/],
  ];
  for (const [argv, why] of cases) {
    const r = await cli(argv);
    t.equal(r.code, EXIT.USAGE, argv.join(' '));
    t.match(r.err, why, argv.join(' '));
  }
  t.notOk(fs.existsSync(path.join(dir, 'r')), 'nothing written on a usage error');
});

t.test('init, add and timestamp write a signed repository; a missing key leaves it untouched', async (t) => {
  const dir = path.join(tmp(t), 'repo');
  const init = await cli(['release', 'init', '--dir', dir, '--threshold-targets', '2', '--expires-root', '2y']);
  t.equal(init.code, EXIT.OK, init.err);
  const root = meta(dir, 'root');
  t.equal(root.signed.roles.targets.threshold, 2);
  t.equal(root.signed.roles.targets.keyids.length, 2);
  t.equal(root.signed.consistent_snapshot, false);
  t.ok(Date.parse(root.signed.expires) > Date.now() + 700 * 86_400_000, 'root lives --expires-root');
  t.ok(Date.parse(meta(dir, 'timestamp').signed.expires) < Date.now() + 2 * 86_400_000, 'the timestamp lives a day by default');
  t.same(fs.readFileSync(path.join(dir, 'metadata', '1.root.json')), fs.readFileSync(path.join(dir, 'metadata', 'root.json')));
  for (const role of ['root', 'targets', 'snapshot', 'timestamp']) {
    const keyDir = path.join(`${dir}-keys`, role);
    t.ok(fs.existsSync(keyDir), `${role} keys beside, not inside, the repository`);
    for (const f of fs.readdirSync(keyDir)) t.equal(fs.statSync(path.join(keyDir, f)).mode & 0o777, 0o600);
  }
  t.notOk(fs.existsSync(path.join(dir, 'keys')));

  const bin = path.join(dir, '..', 'guts-node');
  fs.writeFileSync(bin, 'a guts-node build\n');
  const add = await cli(['release', 'add', '--dir', dir, '--file', bin, '--version', '1.1.0', '--min-from', '1.0.0']);
  t.equal(add.code, EXIT.OK, add.err);
  const target = meta(dir, 'targets').signed.targets['guts-node/1.1.0/guts-node'];
  t.equal(target.length, 18);
  t.equal(target.hashes.sha256, crypto.createHash('sha256').update(fs.readFileSync(bin)).digest('hex'));
  t.ok(target.hashes.sha512);
  t.same(target.custom, { version: '1.1.0', pathKind: 'minor', migration: 'automatic', minFrom: '1.0.0' }, 'defaults from the version');
  t.equal(meta(dir, 'targets').signatures.length, 2, 'targets signed by its threshold');
  t.same(fs.readFileSync(path.join(dir, 'targets', 'guts-node', '1.1.0', 'guts-node')), fs.readFileSync(bin));
  const snapBytes = fs.readFileSync(path.join(dir, 'metadata', 'snapshot.json'));
  t.equal(
    meta(dir, 'timestamp').signed.meta['snapshot.json'].hashes.sha256,
    crypto.createHash('sha256').update(snapBytes).digest('hex'),
    'the timestamp pins the snapshot',
  );

  const ts = await cli(['--json', 'release', 'timestamp', '--dir', dir, '--expires', '3d']);
  t.equal(ts.code, EXIT.OK, ts.err);
  t.equal(JSON.parse(ts.out).version, 3);

  // A targets key taken offline: the next release cannot reach the threshold.
  const targetsKeys = path.join(`${dir}-keys`, 'targets');
  fs.rmSync(path.join(targetsKeys, fs.readdirSync(targetsKeys)[0]!));
  const before = fs.readdirSync(path.join(dir, 'metadata')).map((f) => fs.readFileSync(path.join(dir, 'metadata', f), 'utf8'));
  const short = await cli(['release', 'add', '--dir', dir, '--file', bin, '--version', '1.1.1']);
  t.equal(short.code, EXIT.ROLLOUT_FAILED);
  t.match(short.err, /E_RELEASE_KEYS: targets needs 2 signature\(s\)/);
  t.same(
    fs.readdirSync(path.join(dir, 'metadata')).map((f) => fs.readFileSync(path.join(dir, 'metadata', f), 'utf8')),
    before,
    'metadata untouched',
  );
  t.notOk(fs.existsSync(path.join(dir, 'targets', 'guts-node', '1.1.1')), 'no file copied');

  const again = await cli(['release', 'init', '--dir', dir]);
  t.equal(again.code, EXIT.ROLLOUT_FAILED);
  t.match(again.err, /exists already/);
  const notRepo = await cli(['release', 'timestamp', '--dir', path.join(dir, 'nope')]);
  t.equal(notRepo.code, EXIT.ROLLOUT_FAILED);
  t.match(notRepo.err, /not a release repository/);
});

t.test('add --image signs a pointer to a registry image by digest; anything but a digest reference is a usage error', async (t) => {
  const dir = path.join(tmp(t), 'repo');
  t.equal((await cli(['release', 'init', '--dir', dir])).code, EXIT.OK);
  const ref = `127.0.0.1:5000/guts/guts-node@sha256:${'c4'.repeat(32)}`;
  const add = await cli(['--json', 'release', 'add', '--dir', dir, '--image', ref, '--version', '1.0.1']);
  t.equal(add.code, EXIT.OK, add.err);
  t.equal(JSON.parse(add.out).custom.image, ref);
  const pointer = fs.readFileSync(path.join(dir, 'targets', 'guts-node', '1.0.1', 'guts-node'));
  t.same(JSON.parse(pointer.toString()), { image: ref }, 'the target is a JSON pointer to the image');
  const target = meta(dir, 'targets').signed.targets['guts-node/1.0.1/guts-node'];
  t.same(target.custom, { version: '1.0.1', pathKind: 'patch', migration: 'none', image: ref }, 'the reference is signed into the custom fields');
  t.equal(target.length, pointer.length);
  t.equal(target.hashes.sha256, crypto.createHash('sha256').update(pointer).digest('hex'));
  const text = await cli(['release', 'add', '--dir', dir, '--image', ref, '--version', '1.0.2']);
  t.equal(text.code, EXIT.OK, text.err);
  t.match(text.out, `image ${ref}`);

  const bin = path.join(dir, '..', 'guts-node');
  fs.writeFileSync(bin, 'a guts-node build\n');
  const before = () =>
    fs
      .readdirSync(path.join(dir, 'metadata'))
      .map((f) => fs.readFileSync(path.join(dir, 'metadata', f), 'utf8'))
      .concat(fs.readdirSync(path.join(dir, 'targets', 'guts-node')));
  const state = before();
  const digest = `sha256:${'c4'.repeat(32)}`;
  const cases: [string[], RegExp][] = [
    [['--image', '127.0.0.1:5000/guts/guts-node:1.1.0'], /names no digest/],
    [['--image', `guts/guts-node@${digest}`], /names no registry host/],
    [['--image', `guts-node@${digest}`], /names no registry host/],
    [['--image', `127.0.0.1:5000/guts-node:1.1.0@${digest}`], /tag beside its digest/],
    [['--image', '127.0.0.1:5000/guts-node@sha256:1234'], /64 lowercase hex/],
    [['--image', ref, '--file', bin], /--file and --image both given/],
    [[], /give --file .* or --image/],
  ];
  for (const [extra, why] of cases) {
    const r = await cli(['release', 'add', '--dir', dir, '--version', '1.1.0', ...extra]);
    t.equal(r.code, EXIT.USAGE, extra.join(' ') || 'neither --file nor --image');
    t.match(r.err, /E_RELEASE_USAGE/, extra.join(' '));
    t.match(r.err, why, extra.join(' '));
  }
  // Checked before the repository is read: a usage error says so even where no repository is.
  const nowhere = await cli(['release', 'add', '--dir', path.join(dir, 'nope'), '--version', '1.1.0', '--image', 'x/y:1']);
  t.equal(nowhere.code, EXIT.USAGE);
  t.match(nowhere.err, /E_RELEASE_USAGE/);
  t.same(before(), state, 'nothing written on a usage error');
});
