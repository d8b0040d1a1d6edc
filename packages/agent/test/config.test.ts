import t from 'tap';
import { resolveConfig } from '../src/config.js';

t.test('config validation names the key; env overrides', async (t) => {
  t.throws(() => resolveConfig({}, {}), { code: 'E_CONFIG', message: /nodeId: is required/ });
  t.throws(() => resolveConfig({ nodeId: 'a', checks: { readyTimeoutMs: 'soon' } }, {}), { message: /checks\.readyTimeoutMs: must be a number/ });
  t.throws(() => resolveConfig({ nodeId: 'a', commands: { migrate: 'guts-node migrate' } }, {}), { message: /commands\.migrate: must be an array of strings/ });
  t.throws(() => resolveConfig({ nodeId: 'a', nope: 1 }, {}), { message: /nope: is not a known key/ });
  t.throws(() => resolveConfig({ nodeId: 'a', coordinator: { url: 'http://x' } }, {}), { message: /coordinator\.url: must be a ws/ });
  t.throws(() => resolveConfig({ nodeId: 'a', service: { driver: 'docker' } }, {}), { message: /service\.driver: must be one of/ });
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
