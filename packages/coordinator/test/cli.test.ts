/** The operator CLI's parsing and exit codes, run in-process (the documented command lines run end to end in test/integration/docs-commands). */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { pino } from 'pino';
import { makeTestTls } from '@guts-upgrade/simulator';
import { EXIT, rolloutBody } from '../src/cli.js';
import { cli } from './run-cli.js';
import { buildConfig } from '../src/config.js';
import { startCoordinator } from '../src/server.js';
import { main as serverMain } from '../src/server-cli.js';

const HEX = 'ab'.repeat(32);
// Port 9 on loopback (discard) has no listener here: a parsed command ends "unreachable", not "usage".
const NOWHERE = ['--url', 'http://127.0.0.1:9'];

t.test('--sha256 with digits is read (the flag that once never parsed)', async (t) => {
  const r = await cli(['plan', '--to', '1.1.0', '--artifact-url', 'http://127.0.0.1:9/guts-node', '--sha256', HEX, ...NOWHERE]);
  t.equal(r.code, EXIT.UNREACHABLE, r.err);
  t.match(r.err, /cannot reach the coordinator/);
});

t.test('the rollout body carries the target and only the options given', async (t) => {
  t.same(rolloutBody({ to: '1.1.0' }), { target: { version: '1.1.0' } }, 'a bare version: each agent resolves it through its release repository');
  t.same(rolloutBody({ to: '1.1.0', artifactUrl: 'http://a/b', sha256: HEX, strategy: 'canary', soakMs: 600000, requireApproval: true }), {
    target: { version: '1.1.0', url: 'http://a/b', sha256: HEX },
    strategy: 'canary',
    options: { soakMs: 600000, requireApproval: true },
  });
  t.same(rolloutBody({ to: '1.1.0', artifactUrl: 'http://a/b', sha256: HEX, artifactLength: 395 }).target, {
    version: '1.1.0',
    url: 'http://a/b',
    sha256: HEX,
    length: 395,
  });
});

t.test('usage errors exit 2 and name the problem', async (t) => {
  const cases: [string[], RegExp][] = [
    [['plan', '--to', '1.1.0', '--artifact-url', 'http://x/y'], /--artifact-url without --sha256/],
    [['rollout', 'start', '--to', '1.1.0', '--sha256', HEX, ...NOWHERE], /--sha256 without --artifact-url/],
    [['plan', '--to', '1.1.0', '--artifact-url', 'http://x/y', '--sha256', 'xyz'], /64 hex/],
    [['plan', '--to', '1.1.0', '--artifact-url', 'ftp://x/y', '--sha256', HEX], /http\(s\) URL/],
    [['plan', '--to', '1.1.0', '--artifact-url', 'http://x/y', '--sha256', HEX, '--artifact-length', '0'], /must be a positive integer/],
    [['rollout', 'start', '--to', '1.1.0', '--artifact-url', 'http://x/y', '--sha256', HEX, '--strategy', 'yolo'], /rolling, canary, halt|Allowed choices/],
    [['rollout', 'start', '--to', '1.1.0', '--artifact-url', 'http://x/y', '--sha256', HEX, '--soak-ms', '-5'], /non-negative integer|unknown option/],
    [['rollout', 'pause'], /missing required argument/],
    [['frobnicate'], /unknown command/],
    [['rollout', 'start', '--version', '1.1.0'], /unknown option|--to/],
  ];
  for (const [argv, msg] of cases) {
    const r = await cli(argv);
    t.equal(r.code, EXIT.USAGE, argv.join(' '));
    t.match(r.err, msg, argv.join(' '));
  }
  t.equal((await cli([])).code, EXIT.USAGE, 'no command: usage on stderr, exit 2');
});

t.test('help and version exit 0 on stdout, for every spelling', async (t) => {
  for (const argv of [
    ['--help'],
    ['-h'],
    ['help'],
    ['help', 'rollout'],
    ['rollout', 'start', '--help'],
    ['rollout', 'watch', '-h'],
    ['nodes', 'add', '--help'],
  ]) {
    const r = await cli(argv);
    t.equal(r.code, EXIT.OK, argv.join(' '));
    t.match(r.out, /Usage: guts-upgrade/, argv.join(' '));
  }
  const v = await cli(['--version']);
  t.equal(v.code, EXIT.OK);
  t.match(v.out, /^\d+\.\d+\.\d+\n$/);
});

t.test('the coordinator refuses a configuration with no operator token, with exit 2', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'guts-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'c.yaml');
  writeFileSync(file, `listen: { host: 127.0.0.1, port: 7600 }\ndb: ${join(dir, 'c.db')}\n`);
  let err = '';
  let out = '';
  const io = { env: {}, out: (s: string) => (out += s), err: (s: string) => (err += s) };
  t.equal(await serverMain(['config', 'validate', '--config', file], io), 2);
  t.match(err, /E_CONFIG: config operators: no operator token/);
  t.equal(await serverMain(['--config', file], io), 2, 'the daemon refuses the same configuration');
  t.equal(await serverMain(['config', 'validate', '--config', file], { ...io, env: { GUTS_UPGRADE_OPERATOR_TOKEN: 'an-operator-token-of-length' } }), 0);
  t.match(out, /configuration valid/);
  err = '';
  t.equal(await serverMain(['config', 'validate', '--config', file], { ...io, env: { GUTS_UPGRADE_OPERATOR_TOKEN: 'short' } }), 2);
  t.match(err, /GUTS_UPGRADE_OPERATOR_TOKEN: must be at least 16 characters/, "the environment's operator token has the YAML's minimum length");
  t.equal(await serverMain(['config', 'validate', '--config', join(dir, 'missing.yaml')], io), 2);
  t.equal(await serverMain(['--bogus'], io), 2);
});

t.test('--cacert: an https coordinator signed by a private CA is trusted when named, refused otherwise', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'guts-cli-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const tls = makeTestTls(join(dir, 'tls'), { ips: ['127.0.0.1'] });
  const token = 'operator-token-0123456789';
  const config = buildConfig(
    {
      listen: { host: '127.0.0.1', port: 0 },
      db: join(dir, 'c.db'),
      operators: [{ name: 'alice', token, role: 'operator' }],
      tls: { cert: 'tls/tls.crt', key: 'tls/tls.key' },
    },
    {},
    {},
    dir,
  );
  const c = await startCoordinator(config, { log: pino({ level: 'silent' }) });
  t.teardown(() => c.close());
  t.match(c.url, /^https:\/\//);
  const run = (...argv: string[]) => cli(['--url', c.url!, '--token', token, ...argv]);
  const trusted = await run('--cacert', tls.ca, 'nodes', 'list', '--json');
  t.equal(trusted.code, EXIT.OK, trusted.err);
  t.same(JSON.parse(trusted.out), { nodes: [] });
  const untrusted = await run('nodes', 'list');
  t.not(untrusted.code, EXIT.OK, 'without the CA the certificate is refused');
  const junk = join(dir, 'junk.pem');
  writeFileSync(junk, 'nope');
  for (const [file, msg] of [
    [join(dir, 'missing.pem'), /--cacert.*cannot read/],
    [junk, /--cacert.*holds no PEM certificate/],
  ] as const) {
    const r = await run('--cacert', file, 'nodes', 'list');
    t.equal(r.code, EXIT.USAGE, file);
    t.match(r.err, msg, file);
  }
});
