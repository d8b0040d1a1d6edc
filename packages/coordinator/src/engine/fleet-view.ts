/**
 * The fleet view: pure functions of the agents' live state, the registered
 * node rows and the time. Nothing here reads a clock, a socket or SQLite, so
 * the sequencer, the API and the metrics all see the same picture and a test
 * can build any picture it likes.
 */
import { faultTolerance, quorumSize, reachedByAtLeast } from '@guts-upgrade/protocol';
import type { NodeRow } from '../db.js';
import type { CommandRecord, FleetView, NodeView } from '../model.js';
import { contradictedFollowers, isFollower } from '../roles.js';
import { disruption } from '../sequencer.js';
import type { ChainRules, ChainTracker, ChainView } from './chain-view.js';
import type { LiveNode } from './effects.js';

export interface FleetSettings {
  /** Validator-set size when configured; else the registered nodes count. */
  validators: number | null;
  /** A connected agent silent for longer than this is stale (its node counts as not healthy). */
  heartbeatTimeoutMs: number;
  /** Heights further apart than 4× this raise HEIGHT_DIVERGENCE. */
  syncDistance: number;
  /** The chain rules from the config (slack margin, proof of a produced block); defaults when absent. */
  chain?: ChainRules;
}

/** One node as the coordinator sees it now: the live status while its agent reports, else the last persisted row. */
export function nodeView(row: NodeRow, live: LiveNode | undefined, heartbeatTimeoutMs: number, now: number): NodeView {
  const s = live?.status;
  const connected = !!live?.connected;
  const fresh = live?.lastSeenAt != null && now - live.lastSeenAt <= heartbeatTimeoutMs;
  return {
    id: row.id,
    role: row.role,
    connected,
    healthy: connected && fresh && s?.health === 'up' && s.ready === true,
    version: s ? s.nodeVersion : row.version,
    health: connected && fresh && s ? s.health : s ? 'unknown' : row.health,
    ready: !!s?.ready && connected,
    isLeader: !!s?.isLeader && connected && fresh,
    currentLeader: s?.currentLeader ?? row.currentLeader,
    finalizedHeight: s?.finalizedHeight ?? row.finalizedHeight,
    view: s?.view ?? row.view,
    peerCount: s?.peerCount ?? row.peerCount,
    busy: connected ? (s?.busy ?? null) : row.busy,
    lastSeenAt: live?.lastSeenAt ?? row.lastSeenAt,
    agent: connected ? (fresh ? 'connected' : 'stale') : 'unreachable',
    metrics: connected && fresh ? (s?.metrics ?? null) : null,
  };
}

/**
 * The leader: the healthy node that says it leads in the highest view; when
 * none does, the node most healthy peers name as their current leader.
 */
function leaderOf(nodes: Map<string, NodeView>): string | null {
  let leader: string | null = null;
  let bestView = -1;
  for (const v of nodes.values()) {
    if (v.isLeader && v.healthy && (v.view ?? 0) > bestView) {
      leader = v.id;
      bestView = v.view ?? 0;
    }
  }
  if (leader) return leader;
  const votes = new Map<string, number>();
  for (const v of nodes.values())
    if (v.healthy && v.currentLeader && nodes.has(v.currentLeader)) votes.set(v.currentLeader, (votes.get(v.currentLeader) ?? 0) + 1);
  let max = 0;
  for (const [id, c] of votes) if (c > max) [leader, max] = [id, c];
  return leader;
}

/**
 * The fleet as one picture. With a chain tracker that has heard of the chain,
 * n, the leader and the reference height come from what f + 1 reports agree
 * on and the chain's rules; without one, n is the configured or registered
 * count and the leader the one the nodes name.
 */
export function fleetView(
  rows: readonly NodeRow[],
  live: ReadonlyMap<string, LiveNode>,
  settings: FleetSettings,
  now: number,
  chain?: ChainTracker | null,
): FleetView {
  const nodes = new Map<string, NodeView>();
  for (const r of rows) nodes.set(r.id, nodeView(r, live.get(r.id), settings.heartbeatTimeoutMs, now));
  const bindings = new Map<string, string>();
  for (const r of rows) if (r.pubkey) bindings.set(r.id, r.pubkey);
  const followers = new Set(rows.filter((r) => r.role === 'follower').map((r) => r.id));
  const cv = chain?.view({ nodes, bindings, followers, now, ...(settings.chain ? { rules: settings.chain } : {}) }) ?? null;
  // Until a set is believed, n stays the configured or registered count (and nothing is dispatched).
  if (cv)
    return {
      n: cv.validators.filter((v) => v.active).length || (settings.validators ?? rows.length),
      nodes,
      leader: chainLeader(cv),
      maxHeight: cv.referenceHeight,
      chain: cv,
    };
  // Followers are not validators: they make no n, and their heights no reference (f + 1 counts validators).
  const n = settings.validators ?? rows.length - followers.size;
  const heights: number[] = [];
  for (const v of nodes.values()) if (v.healthy && v.finalizedHeight != null && !followers.has(v.id)) heights.push(v.finalizedHeight);
  // The height f + 1 healthy nodes reach: one node's report of 10^12 moves nothing.
  return { n, nodes, leader: leaderOf(nodes), maxHeight: reachedByAtLeast(heights, faultTolerance(n) + 1), chain: null };
}

/** The managed node the chain's leader rule names for the agreed view (null when the leader is not ours). */
function chainLeader(cv: ChainView): string | null {
  if (!cv.leaderPubkey) return null;
  return cv.validators.find((v) => v.pubkey === cv.leaderPubkey)?.managedBy ?? null;
}

export type FleetWatch = ReturnType<typeof fleetWatch>;

/** The fleet watch: skew, diverging heights, nodes down, and the alerts they raise. */
export function fleetWatch(fleet: FleetView, openCommands: readonly Pick<CommandRecord, 'kind' | 'nodeId'>[], settings: Pick<FleetSettings, 'syncDistance'>) {
  const nodes = [...fleet.nodes.values()];
  const versions: Record<string, number> = {};
  for (const v of nodes) if (v.version) versions[v.version] = (versions[v.version] ?? 0) + 1;
  const heights = nodes.filter((v) => v.healthy && v.finalizedHeight != null).map((v) => v.finalizedHeight!);
  const minH = heights.length ? Math.min(...heights) : null;
  const maxH = heights.length ? Math.max(...heights) : null;
  const spread = minH != null && maxH != null ? maxH - minH : 0;
  const down = nodes.filter((v) => !v.healthy).map((v) => v.id);
  const validatorsDown = down.filter((id) => !isFollower(fleet, id));
  const inFlight = new Set(openCommands.filter((c) => c.kind !== 'prepare').map((c) => c.nodeId));
  const { budget, weighted } = disruption({ fleet, steps: [], busyElsewhere: inFlight, commands: new Map() });
  const chain = fleet.chain ?? null;
  const alerts: { code: string; message: string }[] = [];
  if (Object.keys(versions).length > 1)
    alerts.push({
      code: 'VERSION_SKEW',
      message: `versions: ${Object.entries(versions)
        .map(([v, c]) => `${v}×${c}`)
        .join(', ')}`,
    });
  if (spread > settings.syncDistance * 4) alerts.push({ code: 'HEIGHT_DIVERGENCE', message: `finalized heights differ by ${spread}` });
  if (down.length > 0) alerts.push({ code: 'NODES_DOWN', message: `down: ${down.join(', ')}` });
  // A node whose agent vanished mid-step stays counted as in flight (safe for f) until its
  // result arrives; say so loudly instead of showing a silent "upgrading".
  const lost = nodes.filter((v) => inFlight.has(v.id) && v.agent !== 'connected');
  if (lost.length > 0) {
    alerts.push({
      code: 'IN_FLIGHT_UNREACHABLE',
      message: `agent ${lost.map((v) => `${v.id} (${v.agent}, last seen ${v.lastSeenAt ? new Date(v.lastSeenAt).toISOString() : 'never'})`).join(', ')} stopped reporting mid-command; its node state is unknown and counts as down until its result arrives`,
    });
  }
  if (chain) {
    alerts.push(...chain.alerts);
    if (chain.status === 'adopted' && chain.slack < 0)
      alerts.push({ code: 'QUORUM_AT_RISK', message: `weight proven live is ${chain.slack} below the quorum weight ${chain.quorumWeight}` });
  } else if (validatorsDown.length > faultTolerance(fleet.n))
    alerts.push({ code: 'QUORUM_AT_RISK', message: `${validatorsDown.length} validators down exceeds f = ${faultTolerance(fleet.n)}` });
  for (const c of contradictedFollowers(fleet))
    alerts.push({ code: 'FOLLOWER_IS_VALIDATOR', message: `${c.why}: it counts as a validator and is not upgraded as a follower` });
  return {
    n: fleet.n,
    f: faultTolerance(fleet.n),
    quorum: quorumSize(fleet.n),
    disruptionBudget: budget,
    leader: fleet.leader,
    versions,
    versionSkew: Object.keys(versions).length > 1,
    heights: { min: minH, max: maxH, spread },
    heightsDiverging: spread > settings.syncDistance * 4,
    down,
    inFlight: [...inFlight],
    unreachable: nodes.filter((v) => v.agent !== 'connected').map((v) => v.id),
    alerts,
    chain: chain ? chainSummary(chain, weighted?.slack ?? null) : null,
    nodes: nodes.map((v) => ({ ...v, lastSeenAt: v.lastSeenAt ? new Date(v.lastSeenAt).toISOString() : null })),
  };
}

/**
 * The chain's view for the API: the adopted set, the slack proven now (and
 * what is left after the commands in flight), and per validator who manages
 * it and the evidence that it is live.
 */
function chainSummary(chain: ChainView, slackAfterInFlight: number | null) {
  return {
    status: chain.status,
    epoch: chain.epoch,
    totalWeight: chain.totalWeight,
    quorumWeight: chain.quorumWeight,
    largestSlack: chain.largestSlack,
    slack: chain.slack,
    slackAfterInFlight,
    margin: chain.margin,
    reportersNeeded: chain.reportersNeeded,
    agreedView: chain.agreedView,
    leader: chain.leaderPubkey,
    referenceHeight: chain.referenceHeight,
    validators: chain.validators.map((v) => ({
      name: v.name,
      pubkey: v.pubkey,
      weight: v.weight,
      active: v.active,
      managed: v.managedBy != null,
      node: v.managedBy,
      live: v.live,
      evidence: v.evidence,
    })),
  };
}
