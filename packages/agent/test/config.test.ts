import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { resolveConfig } from '../src/config.js';
import { checkTextfileDir, writeAtomically } from '../src/metrics-textfile.js';

t.test('config validation names the key; env overrides', async (t) => {
  t.throws(() => resolveConfig({}, {}), { code: 'E_CONFIG', message: /nodeId: is required/ });
  t.throws(() => resolveConfig({ nodeId: 'a', checks: { readyTimeoutMs: 'soon' } }, {}), {
    message: /checks\.readyTimeoutMs: must be milliseconds or a duration like "30s"/,
  });
  t.throws(() => resolveConfig({ nodeId: 'a', commands: { migrate: 'guts-node migrate' } }, {}), { message: /commands\.migrate: must be an array of strings/ });
  t.throws(() => resolveConfig({ nodeId: 'a', nope: 1 }, {}), { message: /nope: is not a known key/ });
  t.throws(() => resolveConfig({ nodeId: 'a', coordinator: { url: 'http://x' } }, {}), { message: /coordinator\.url: must be a ws/ });
  t.throws(() => resolveConfig({ nodeId: 'a', service: { driver: 'podman' } }, {}), { message: /service\.driver: must be one of/ });
  // Container drivers: what each needs is checked at load, with the key named.
  t.throws(() => resolveConfig({ nodeId: 'a', service: { driver: 'compose' } }, {}), { message: /service\.file: is required with driver compose/ });
  t.throws(() => resolveConfig({ nodeId: 'a', service: { driver: 'docker', container: 'bad name' } }, {}), {
    message: /service\.container: must be a container name/,
  });
  t.throws(() => resolveConfig({ nodeId: 'a', service: { driver: 'docker', imageBinary: 'guts-node' } }, {}), {
    message: /service\.imageBinary: must be an absolute path/,
  });
  t.throws(() => resolveConfig({ nodeId: 'a', service: { file: '/srv/guts/docker-compose.yml' } }, {}), {
    message: /service\.file: is for driver compose only/,
  });
  const compose = resolveConfig({ nodeId: 'a', service: { driver: 'compose', file: 'guts/docker-compose.yml', dockerSocket: 'run/docker.sock' } }, {}, '/srv');
  t.equal(compose.service.file, '/srv/guts/docker-compose.yml', 'compose file resolved against the config dir');
  t.equal(compose.service.dockerSocket, '/srv/run/docker.sock');
  t.equal(compose.service.service, 'guts-node', 'compose service defaults to guts-node');
  const c = resolveConfig(
    { nodeId: 'a' },
    { GUTS_UPGRADE_CHECKS__READY_TIMEOUT_MS: '5000', GUTS_UPGRADE_NODE_ID: 'b', GUTS_UPGRADE_COORDINATOR__URL: 'wss://c/' },
    '/',
  );
  t.equal(c.checks.readyTimeoutMs, 5000);
  t.equal(c.nodeId, 'b');
  t.equal(c.coordinator.url, 'wss://c');
  t.equal(c.backup.dir, '/var/lib/guts-upgrade/backups');
});

t.test('role: validator by default, follower when configured (file or GUTS_UPGRADE_ROLE), nothing else', async (t) => {
  t.equal(resolveConfig({ nodeId: 'a' }, {}, '/').role, 'validator');
  t.equal(resolveConfig({ nodeId: 'a', role: 'follower' }, {}, '/').role, 'follower');
  t.equal(resolveConfig({ nodeId: 'a' }, { GUTS_UPGRADE_ROLE: 'follower' }, '/').role, 'follower');
  t.throws(() => resolveConfig({ nodeId: 'a', role: 'observer' }, {}), { code: 'E_CONFIG', message: /role: must be one of validator, follower/ });
});

t.test('metrics.textfile: off by default, a *.prom path, its directory checked before run', async (t) => {
  t.equal(resolveConfig({ nodeId: 'a' }, {}, '/').metrics.textfile, null, 'off by default');
  t.throws(() => resolveConfig({ nodeId: 'a', metrics: { textfile: '/tmp/guts.txt' } }, {}), {
    code: 'E_CONFIG',
    message: /metrics\.textfile: must name a \*\.prom file/,
  });
  t.throws(() => resolveConfig({ nodeId: 'a', metrics: { intervalMs: 10 } }, {}), {
    code: 'E_CONFIG',
    message: /metrics\.intervalMs: must be at least 1000 ms/,
  });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'guts-textfile-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const c = resolveConfig({ nodeId: 'a', metrics: { textfile: 'tf/agent.prom' } }, {}, dir);
  t.equal(c.metrics.textfile, path.join(dir, 'tf/agent.prom'), 'resolved against the config file directory');
  t.throws(() => checkTextfileDir(c.metrics.textfile!), { code: 'E_CONFIG', message: /directory .*tf does not exist/ });
  t.same(fs.readdirSync(dir), [], 'nothing created');
  fs.mkdirSync(path.join(dir, 'tf'));
  checkTextfileDir(c.metrics.textfile!);
  writeAtomically(c.metrics.textfile!, 'guts_upgrade_agent_busy{node_id="a"} 0\n');
  t.same(fs.readdirSync(path.join(dir, 'tf')), ['agent.prom'], 'written by rename: no temporary file left');
});

t.test('durations and schedules in the syntax both daemons share, checked at load', async (t) => {
  const c = resolveConfig(
    {
      nodeId: 'a',
      checks: { readyTimeoutMs: '2m', consensusTimeoutMs: '1h30m', stabilizeMs: 1500 },
      service: { stopTimeoutMs: '30s' },
      backup: { schedule: '0 3 * * *' },
    },
    { GUTS_UPGRADE_CHECKS__PEERS_TIMEOUT_MS: '90s' },
    '/',
  );
  t.same(
    [c.checks.readyTimeoutMs, c.checks.consensusTimeoutMs, c.checks.stabilizeMs, c.service.stopTimeoutMs, c.checks.peersTimeoutMs],
    [120_000, 5_400_000, 1500, 30_000, 90_000],
  );
  t.equal(c.backup.schedule, '0 3 * * *');
  t.throws(() => resolveConfig({ nodeId: 'a', backup: { schedule: '0 25 * * *' } }, {}), {
    code: 'E_CONFIG',
    message: /backup\.schedule: invalid cron expression "0 25 \* \* \*"/,
  });
  t.throws(() => resolveConfig({ nodeId: 'a', checks: { pollMaxMs: '10ms' } }, {}), {
    code: 'E_CONFIG',
    message: /checks\.pollMaxMs: must be at least 50 ms, got 10/,
  });
  t.throws(() => resolveConfig({ nodeId: 'a', fetch: { timeoutMs: '1.5s' } }, {}), {
    code: 'E_CONFIG',
    message: /fetch\.timeoutMs: must be milliseconds or a duration/,
  });
});

t.test('fetch.maxBytes and fetch.allowedOrigins: a bound by default, origins normalized, anything else refused', async (t) => {
  const dflt = resolveConfig({ nodeId: 'a' }, {}, '/');
  t.equal(dflt.fetch.maxBytes, 1024 ** 3, '1 GiB by default');
  t.same(dflt.fetch.allowedOrigins, [], 'no other origin by default');
  const c = resolveConfig({ nodeId: 'a', fetch: { maxBytes: 1000, allowedOrigins: ['HTTPS://Mirror.Example:443/', 'http://10.0.0.5:8080'] } }, {}, '/');
  t.equal(c.fetch.maxBytes, 1000);
  t.same(c.fetch.allowedOrigins, ['https://mirror.example', 'http://10.0.0.5:8080'], 'compared as URL.origin');
  const env = resolveConfig({ nodeId: 'a' }, { GUTS_UPGRADE_FETCH__MAX_BYTES: '2048', GUTS_UPGRADE_FETCH__ALLOWED_ORIGINS: '["https://m.example"]' }, '/');
  t.equal(env.fetch.maxBytes, 2048);
  t.same(env.fetch.allowedOrigins, ['https://m.example']);
  t.throws(() => resolveConfig({ nodeId: 'a', fetch: { maxBytes: 0 } }, {}), { code: 'E_CONFIG', message: /fetch\.maxBytes: must be >= 1/ });
  for (const bad of ['https://m.example/releases', 'ftp://m.example', 'm.example', 'https://user:pw@m.example', 'https://m.example/?q=1']) {
    t.throws(
      () => resolveConfig({ nodeId: 'a', fetch: { allowedOrigins: [bad] } }, {}),
      {
        code: 'E_CONFIG',
        message: /fetch\.allowedOrigins: must list origins as scheme:\/\/host\[:port\]/,
      },
      bad,
    );
  }
  t.throws(() => resolveConfig({ nodeId: 'a', fetch: { allowedOrigins: 'https://m.example' } }, {}), {
    code: 'E_CONFIG',
    message: /fetch\.allowedOrigins: must be a list/,
  });
});
