import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { buildConfig, loadConfig } from '../src/config.js';

const base = { db: ':memory:', operators: [{ name: 'alice', token: 'operator-token-0123456789', role: 'operator' }] };

t.test("durations and schedules in the agent's syntax, checked at load", async (t) => {
  const c = buildConfig({
    ...base,
    heartbeat: { intervalMs: '2s', timeoutMs: 10000 },
    windows: [
      { name: 'sunday-night', cron: '0 2 * * 0', duration: '4h' },
      { name: 'short', cron: '*/30 * * * * *', duration: '1h30m' },
    ],
    defaults: { soakMs: '10m', stabilizationMs: '30s' },
  });
  t.same([c.heartbeat.intervalMs, c.heartbeat.timeoutMs], [2000, 10_000]);
  t.same(
    c.windows.map((w) => w.durationMs),
    [14_400_000, 5_400_000],
  );
  t.same([c.defaults.soakMs, c.defaults.stabilizationMs], [600_000, 30_000]);
});

t.test('bad durations and schedules are refused, naming the key', async (t) => {
  const refused: [unknown, RegExp][] = [
    [{ windows: [{ name: 'w', cron: '0 2 * * 0', duration: 120 }] }, /windows\[0\]\.duration: must name its unit, like "2h" or "90m"/],
    [{ windows: [{ name: 'w', cron: '0 2 * * 0', duration: '120' }] }, /windows\[0\]\.duration: must name its unit/],
    [{ windows: [{ name: 'w', cron: '0 2 * * 0', duration: '0s' }] }, /windows\[0\]\.duration: must be longer than zero/],
    [{ windows: [{ name: 'w', cron: '0 2 * * 0', duration: 'soon' }] }, /windows\[0\]\.duration: must be milliseconds or a duration like "30s"/],
    [{ windows: [{ name: 'w', cron: '0 25 * * *', duration: '1h' }] }, /windows\[0\]\.cron: invalid cron expression "0 25 \* \* \*"/],
    [{ defaults: { soakMs: '1.5m' } }, /defaults\.soakMs: must be milliseconds or a duration/],
  ];
  for (const [extra, msg] of refused) t.throws(() => buildConfig({ ...base, ...(extra as object) }), { code: 'E_CONFIG', message: msg }, JSON.stringify(extra));
});

t.test("relative TLS file names are found beside the config file (systemd's credentials directory)", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'coord-cred-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'tls.crt'), 'CERT');
  writeFileSync(join(dir, 'tls.key'), 'KEY');
  const file = join(dir, 'coordinator.yaml');
  writeFileSync(file, "db: ':memory:'\noperators: [{ name: alice, token: operator-token-0123456789, role: operator }]\ntls: { cert: tls.crt, key: tls.key }\n");
  t.same(loadConfig(file, {}, {}).tls, { cert: 'CERT', key: 'KEY' });
  writeFileSync(
    file,
    "db: ':memory:'\noperators: [{ name: alice, token: operator-token-0123456789, role: operator }]\ntls: { cert: tls.crt, key: missing.key }\n",
  );
  t.throws(() => loadConfig(file, {}, {}), { code: 'E_CONFIG', message: new RegExp(`tls: cannot read: .*${join(dir, 'missing.key')}`) });
});

t.test('limits: documented defaults, each key settable, bad values refused naming the key', async (t) => {
  const d = buildConfig(base).limits;
  t.same(
    d,
    { agentMessages: { perSecond: 50, burst: 200 }, api: { max: 6000, windowMs: 60_000 }, refusedLogIntervalMs: 60_000 },
    'the defaults docs/operating.md shows',
  );
  const c = buildConfig({ ...base, limits: { agentMessages: { perSecond: 10, burst: 10 }, api: { max: 5, windowMs: '10s' }, refusedLogIntervalMs: '5m' } });
  t.same(c.limits, { agentMessages: { perSecond: 10, burst: 10 }, api: { max: 5, windowMs: 10_000 }, refusedLogIntervalMs: 300_000 });
  t.same(buildConfig({ ...base, limits: { api: { max: 7 } } }).limits.api, { max: 7, windowMs: 60_000 }, 'an omitted key keeps its default');
  const refused: [unknown, RegExp][] = [
    [{ limits: { agentMessages: { perSecond: 0 } } }, /limits\.agentMessages\.perSecond: must be an integer/],
    [{ limits: { agentMessages: { perSecond: 100, burst: 20 } } }, /limits\.agentMessages\.burst: must be at least perSecond \(100\)/],
    [{ limits: { api: { max: -1 } } }, /limits\.api\.max: must be an integer/],
    [{ limits: { api: { windowMs: '10ms' } } }, /limits\.api\.windowMs: must be within/],
    [{ limits: { refusedLogIntervalMs: 'often' } }, /limits\.refusedLogIntervalMs: must be milliseconds or a duration/],
    [{ limits: { agentMessage: {} } }, /limits\.agentMessage: unknown key/],
  ];
  for (const [extra, msg] of refused) t.throws(() => buildConfig({ ...base, ...(extra as object) }), { code: 'E_CONFIG', message: msg }, JSON.stringify(extra));
});
