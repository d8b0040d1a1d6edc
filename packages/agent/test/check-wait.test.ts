import t from 'tap';
import { resolveConfig } from '../src/config.js';
import { peerReadingOf } from '../src/node-client.js';
import { nextDelay, pollUntil } from '../src/steps/wait.js';

t.test('pollUntil: waits for the condition, backing off', async (t) => {
  let n = 0;
  const r = await pollUntil({ read: async () => ++n, done: (v) => v >= 4, timeoutMs: 60_000, initialMs: 1, maxMs: 5 });
  t.match(r, { ok: true, gaveUp: false, value: 4, polls: 4 });
  t.type(r.waitedMs, 'number');
});

t.test('pollUntil: fails only at its deadline, with the last value seen', async (t) => {
  let n = 0;
  const r = await pollUntil({ read: async () => `v${++n}`, done: () => false, timeoutMs: 300, initialMs: 10, maxMs: 40 });
  t.equal(r.ok, false);
  t.equal(r.gaveUp, false);
  t.ok(r.waitedMs >= 300, `waited until the deadline (${r.waitedMs} ms)`);
  t.equal(r.value, `v${r.polls}`, 'the value of the last read');
  t.ok(r.polls > 2, 'read more than once');
});

t.test('pollUntil: giveUp ends the wait early, and wake cuts a pause short', async (t) => {
  const wake = new AbortController();
  let stop = false;
  const p = pollUntil({ read: async () => 'unknown', done: () => false, giveUp: () => stop, wake: wake.signal, timeoutMs: 600_000, initialMs: 600_000 });
  await new Promise((r) => setTimeout(r, 50));
  stop = true;
  wake.abort();
  const r = await p;
  t.match(r, { ok: false, gaveUp: true, value: 'unknown', polls: 2 });
});

t.test('nextDelay: multiplies up to the cap, never past the deadline', async (t) => {
  const o = { initialMs: 100, maxMs: 2000, factor: 1.5 };
  t.equal(nextDelay(null, o, 10_000), 100);
  t.equal(nextDelay(100, o, 10_000), 150);
  t.equal(nextDelay(1800, o, 10_000), 2000);
  t.equal(nextDelay(2000, o, 10_000), 2000);
  t.equal(nextDelay(2000, o, 300), 300, 'the last pause ends at the deadline');
  t.equal(nextDelay(2000, o, -5), 0);
});

t.test('peers: only a figure the node gives is a figure', async (t) => {
  // Today's guts-node, all its life.
  const real = {
    status: 'up',
    version: '1.0.0',
    checks: { storage: { status: 'up' }, p2p: { status: 'unknown', details: { reason: 'P2P not connected or not enabled' } } },
  };
  t.same(peerReadingOf(real), { reported: false, status: 'unknown', reason: 'p2p unknown (P2P not connected or not enabled)' });
  t.same(peerReadingOf({ checks: { p2p: { status: 'up', details: { peer_count: 3 } } } }), { reported: true, status: 'up', count: 3 });
  t.same(
    peerReadingOf({
      components: [
        { name: 'storage', status: 'up' },
        { name: 'p2p', status: 'up', peers: 0 },
      ],
    }),
    { reported: true, status: 'up', count: 0 },
  );
  t.same(peerReadingOf({ checks: { p2p: { status: 'down' } } }), { reported: true, status: 'down', count: 0 }, 'p2p down is a measured 0');
  t.match(peerReadingOf({ checks: { p2p: { status: 'up' } } }), { reported: false, reason: 'p2p up without a peer count' });
  t.match(peerReadingOf({ checks: { storage: { status: 'up' } } }), { reported: false, reason: 'no p2p component in /health' });
  t.match(peerReadingOf(null), { reported: false });
  t.match(peerReadingOf({ checks: { p2p: { status: 'up', details: { peer_count: -1 } } } }), { reported: false }, 'a negative count is no count');
});

t.test('config: every waiting check has its own deadline', async (t) => {
  const c = resolveConfig({ nodeId: 'a' }, {});
  t.match(c.checks, {
    readyTimeoutMs: 120_000,
    versionTimeoutMs: 60_000,
    consensusTimeoutMs: 120_000,
    consensusStartingStates: ['Starting'],
    peersTimeoutMs: 120_000,
    advanceTimeoutMs: 120_000,
    syncTimeoutMs: 300_000,
    pollMaxMs: 2000,
    minPeers: 0,
  });
  const e = resolveConfig(
    { nodeId: 'a' },
    { GUTS_UPGRADE_CHECKS__CONSENSUS_STARTING_STATES: '["Starting","Syncing"]', GUTS_UPGRADE_CHECKS__PEERS_TIMEOUT_MS: '5000' },
  );
  t.same(e.checks.consensusStartingStates, ['Starting', 'Syncing']);
  t.equal(e.checks.peersTimeoutMs, 5000);
  t.throws(() => resolveConfig({ nodeId: 'a', checks: { consensusStartingStates: 'Starting' } }, {}), {
    code: 'E_CONFIG',
    message: /checks\.consensusStartingStates: must be a list of names/,
  });
  t.throws(() => resolveConfig({ nodeId: 'a', checks: { pollMaxMs: 10 } }, {}), { code: 'E_CONFIG', message: /checks\.pollMaxMs: must be at least 50 ms/ });
});
