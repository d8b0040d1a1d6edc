/**
 * The fleet view is pure: the same live status, node rows and time give the
 * same picture. These cases pin the rules the sequencer relies on.
 */
import t from 'tap';
import type { NodeStatus } from '@guts-upgrade/protocol';
import type { NodeRow } from '../src/db.js';
import type { LiveNode } from '../src/engine/effects.js';
import { fleetView, fleetWatch, nodeView } from '../src/engine/fleet-view.js';

const NOW = 1_700_000_000_000;
const settings = { validators: null, heartbeatTimeoutMs: 15_000, syncDistance: 2 };

function row(id: string, extra: Partial<NodeRow> = {}): NodeRow {
  return {
    id,
    address: null,
    createdAt: 0,
    revokedAt: null,
    agentVersion: null,
    version: '1.0.0',
    health: 'unknown',
    ready: false,
    isLeader: false,
    currentLeader: null,
    finalizedHeight: 90,
    view: null,
    peerCount: null,
    busy: null,
    lastSeenAt: null,
    pubkey: null,
    role: 'validator',
    ...extra,
  };
}

function live(extra: Partial<NodeStatus> = {}, lastSeenAt = NOW): LiveNode {
  return {
    connected: true,
    agentVersion: '0.1.0',
    lastSeenAt,
    connectedAt: lastSeenAt,
    status: {
      nodeVersion: '1.0.0',
      health: 'up',
      ready: true,
      isLeader: false,
      currentLeader: 'v0',
      finalizedHeight: 100,
      view: 3,
      peerCount: 3,
      busy: null,
      ...extra,
    },
  };
}

t.test('a node is healthy only while its agent reports fresh, up and ready', async (t) => {
  t.equal(nodeView(row('v0'), live(), 15_000, NOW).healthy, true);
  const stale = nodeView(row('v0'), live({}, NOW - 15_001), 15_000, NOW);
  t.equal(stale.healthy, false, 'a silent agent makes its node unhealthy');
  t.equal(stale.agent, 'stale');
  t.equal(stale.health, 'unknown');
  const gone = nodeView(row('v0', { version: '0.9.0' }), undefined, 15_000, NOW);
  t.equal(gone.agent, 'unreachable');
  t.equal(gone.version, '0.9.0', 'without a live status the persisted row shows');
  t.equal(nodeView(row('v0'), live({ ready: false }), 15_000, NOW).healthy, false, 'not ready is not healthy');
});

t.test("the leader: the healthy self-declared leader of the highest view, else the peers' vote", async (t) => {
  const rows = ['v0', 'v1', 'v2', 'v3'].map((id) => row(id));
  const links = new Map<string, LiveNode>([
    ['v0', live({ isLeader: true, view: 2 })],
    ['v1', live({ isLeader: true, view: 5 })],
    ['v2', live()],
    ['v3', live()],
  ]);
  t.equal(fleetView(rows, links, settings, NOW).leader, 'v1', 'the highest view wins');
  const noClaim = new Map([...links].map(([id]) => [id, live({ currentLeader: id === 'v3' ? 'v3' : 'v2' })] as const));
  t.equal(fleetView(rows, noClaim, settings, NOW).leader, 'v2', 'most peers name v2');
  const f = fleetView(rows, links, settings, NOW);
  t.equal(f.n, 4, 'n defaults to the registered nodes');
  t.equal(f.maxHeight, 100, 'the highest finalized height among healthy nodes');
  t.equal(fleetView(rows, links, { ...settings, validators: 7 }, NOW).n, 7, 'a configured validator count wins');
});

t.test('the fleet watch raises its alerts', async (t) => {
  const rows = ['v0', 'v1', 'v2', 'v3'].map((id) => row(id));
  const links = new Map<string, LiveNode>([
    ['v0', live({ nodeVersion: '1.1.0', finalizedHeight: 120 })],
    ['v1', live()],
    ['v2', live({}, NOW - 60_000)],
  ]);
  const w = fleetWatch(
    fleetView(rows, links, settings, NOW),
    [
      { kind: 'upgrade', nodeId: 'v2' },
      { kind: 'prepare', nodeId: 'v1' },
    ],
    settings,
  );
  t.same(
    w.alerts.map((a) => a.code),
    ['VERSION_SKEW', 'HEIGHT_DIVERGENCE', 'NODES_DOWN', 'IN_FLIGHT_UNREACHABLE', 'QUORUM_AT_RISK'],
  );
  t.same(w.inFlight, ['v2'], 'a prepare does not take its node down');
  t.same(w.down, ['v2', 'v3']);
  t.equal(w.disruptionBudget, 0);
  t.same(w.heights, { min: 100, max: 120, spread: 20 });
});
