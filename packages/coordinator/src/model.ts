/** The coordinator's records, shared by the pure sequencer, the store and the API. */
import type { CommandKind, ErrorCode, FailureEvidence, Health, NodeMetrics, NodeRole, Outcome, PathKind } from '@guts-upgrade/protocol';
import type { ChainView } from './engine/chain-view.js';
import type { Baseline, CanaryLimits, Counters } from './canary.js';
import type { CommandState, RolloutState, StepState } from './states.js';
import type { RolloutTarget } from './target.js';

export type Strategy = 'rolling' | 'canary' | 'halt';
export const STRATEGIES: readonly Strategy[] = ['rolling', 'canary', 'halt'];

export interface RolloutOptions {
  maxUnavailable: number;
  /** Pause after a wave is synced before the next one. */
  stabilizationMs: number;
  /** Canary soak duration. */
  soakMs: number;
  /** How many blocks behind the fleet's highest height a node may be and count as synced. */
  syncDistance: number;
  /** How long an upgraded node may take to report synced before it counts as failed. */
  syncTimeoutMs: number;
  /** How long the whole network may take to finalize again after a halt upgrade. */
  haltTimeoutMs: number;
  autoRollback: boolean;
  allowDowngrade: boolean;
  canary: string | null;
  /** Name of a configured maintenance window; the rollout only starts inside it. */
  window: string | null;
  requireApproval: boolean;
  /** A soak whose metrics judged nothing (too few requests, no reference) fails instead of passing. */
  requireJudgedSoak?: boolean;
  /** Metrics limits for the canary soak (absent in rollouts created before they existed: defaults). */
  canaryLimits?: CanaryLimits;
}

export interface RolloutData {
  approvedBy?: string;
  approvedAt?: number;
  soakStartedAt?: number;
  soakStartHeight?: number | null;
  soakPassed?: boolean;
  /** Request counters of the canary and the reference nodes when the soak started. */
  soakMetrics?: Record<string, Counters>;
  /** The canary's own metrics just before its upgrade was dispatched. */
  canaryBaseline?: Baseline | null;
  haltSentAt?: number;
  haltHeight?: number | null;
  /** When the last wave finished syncing; the next one waits stabilizationMs after it. */
  lastStableAt?: number;
  /** Failed nodes the operator already saw (a resume must not pause again on them). */
  handledFailures?: string[];
  dispatchSeq?: number;
  /** Why dispatch waits right now (the network slack gate), or null when it does not. */
  waiting?: string | null;
  /** In-flight nodes whose agent was reported lost (node.agent_lost) and is not back yet. */
  lostAgents?: string[];
  /** A rollback that was paused: resume goes on rolling back, not upgrading again. */
  pausedFrom?: 'rolling_back' | null;
}

export interface Rollout {
  id: string;
  strategy: Strategy;
  /** The version, with url and sha256 only when the operator gave them (for agents without a release repository). */
  target: RolloutTarget;
  fromVersion: string | null;
  pathKind: PathKind;
  options: RolloutOptions;
  state: RolloutState;
  code: ErrorCode | null;
  reason: string | null;
  nodes: string[];
  waves: string[][];
  data: RolloutData;
  createdBy: string;
  createdAt: number;
  updatedAt: number;
  stateSince: number;
}

export interface Step {
  rolloutId: string;
  nodeId: string;
  position: number;
  state: StepState;
  commandId: string | null;
  attempt: number;
  fromVersion: string | null;
  code: ErrorCode | null;
  message: string | null;
  downtimeMs: number | null;
  dispatchSeq: number | null;
  startedAt: number | null;
  resultAt: number | null;
  syncedAt: number | null;
  finishedAt: number | null;
  updatedAt: number;
  /** Latest progress reported by the agent for the current command. */
  progress: string | null;
  /** Why the step failed, in the agent's words: the failing check and the node's last log lines. */
  evidence?: FailureEvidence | null;
}

export type { CommandState } from './states.js';

export interface CommandRecord {
  id: string;
  nodeId: string;
  rolloutId: string | null;
  kind: CommandKind;
  digest: string;
  body: string;
  state: CommandState;
  outcome: Outcome | null;
  code: ErrorCode | null;
  message: string | null;
  runningVersion: string | null;
  downtimeMs: number | null;
  /** The node's consensus view when its agent last stopped it (null: not reported). */
  stoppedAtView: number | null;
  createdAt: number;
  updatedAt: number;
}

/** What the coordinator knows about one validator right now. */
export interface NodeView {
  id: string;
  /**
   * As registered: a follower (a full node outside the validator set) is outside n,
   * f and the safety budget, unless the chain says otherwise (see roles.ts). Absent: validator.
   */
  role?: NodeRole;
  connected: boolean;
  /** Connected, heartbeat fresh, health up and ready. */
  healthy: boolean;
  version: string | null;
  health: Health;
  ready: boolean;
  isLeader: boolean;
  currentLeader: string | null;
  finalizedHeight: number | null;
  view: number | null;
  peerCount: number | null;
  busy: { commandId: string; kind: CommandKind; step: string | null } | null;
  lastSeenAt: number | null;
  /**
   * The agent link: connected with fresh heartbeats, connected but silent past
   * the heartbeat timeout, or not connected (unknown state of the node).
   */
  agent?: 'connected' | 'stale' | 'unreachable';
  /** Request counters from the last heartbeat (agents that scrape /metrics). */
  metrics?: NodeMetrics | null;
}

export interface FleetView {
  /** Validator-set size (n), not just the connected ones. */
  n: number;
  nodes: Map<string, NodeView>;
  leader: string | null;
  /** The reference height: the finalized height at least f + 1 healthy nodes reach (never one report's claim). */
  maxHeight: number | null;
  /**
   * The chain's own validator set, weights and liveness evidence, when the
   * agents report it; absent or null: the fleet is counted by nodes, each 1.
   */
  chain?: ChainView | null;
}
