/**
 * The sequencer: a pure function from (rollout, its steps, the commands sent,
 * the fleet as seen now) to the next actions. All IO (SQLite, websockets,
 * webhooks) lives around it in engine/, so every safety rule — never more
 * than f down, leader last, wait for sync, canary soak, halt gating — is
 * testable without a network, and a restarted coordinator recomputes the same
 * decision from the persisted state.
 */
import { disruptionBudget, faultTolerance, type CommandKind, type ErrorCode, type UpgradeOptions } from '@guts-upgrade/protocol';
import { baselineOf, DEFAULT_CANARY_LIMITS, judgeCanary, type CanaryLimits, type Counters } from './canary.js';
import type { ChainValidatorView } from './engine/chain-view.js';
import type { CommandRecord, FleetView, NodeView, Rollout, RolloutData, Step } from './model.js';
import { contradictedFollowers, isFollower } from './roles.js';
import { neverSafe, neverSafeMessage, nodeWeight, slackShortfall, weightBudget, type WeightBudget } from './weight-budget.js';
import { IN_FLIGHT_STEP_STATES, TERMINAL_ROLLOUT_STATES, isCommandFinished, type RolloutState, type StepState } from './states.js';

export type Action =
  | { kind: 'rollout'; to: RolloutState; code?: ErrorCode | null; reason?: string | null }
  | { kind: 'data'; data: Partial<RolloutData> }
  | {
      kind: 'step';
      nodeId: string;
      to: StepState;
      code?: ErrorCode | null;
      message?: string | null;
      patch?: Partial<Pick<Step, 'resultAt' | 'syncedAt' | 'finishedAt' | 'downtimeMs' | 'startedAt' | 'dispatchSeq' | 'fromVersion'>>;
    }
  | { kind: 'send'; nodeId: string; command: CommandKind; commandId: string; options?: UpgradeOptions }
  | { kind: 'event'; type: string; nodeId?: string; data?: Record<string, unknown> };

export interface SequencerInput {
  rollout: Rollout;
  steps: Step[];
  commands: Map<string, CommandRecord>;
  fleet: FleetView;
  /** Nodes down because of something else: another rollout's command or step in flight. */
  busyElsewhere: Set<string>;
  /** Whether the rollout's maintenance window (if any) is open now. */
  windowOpen: boolean;
  now: number;
}

export function commandIdFor(rolloutId: string, nodeId: string, kind: CommandKind, attempt: number): string {
  return `${rolloutId}.${nodeId}.${kind}.${attempt}`;
}

/** A node counts as synced when it runs the target, is healthy and is near the fleet's top height. */
export function isSynced(node: NodeView | undefined, version: string, fleet: FleetView, syncDistance: number): boolean {
  if (!node?.healthy || node.version !== version) return false;
  if (fleet.maxHeight == null) return true;
  return node.finalizedHeight != null && node.finalizedHeight >= fleet.maxHeight - syncDistance;
}

/** Nodes that are down or at risk right now, split into "in flight" (ours or others') and "unhealthy". */
export function disruption(input: Pick<SequencerInput, 'fleet' | 'steps' | 'busyElsewhere' | 'commands'>): {
  inFlight: Set<string>;
  unhealthy: Set<string>;
  budget: number;
  f: number;
  /** The budget in voting weight, when the chain's set is known (then it is the one that decides). */
  weighted: WeightBudget | null;
} {
  // Followers are outside the budget: one down or upgrading neither counts against f nor uses a slot.
  const follower = (id: string) => isFollower(input.fleet, id);
  const inFlight = new Set<string>([...input.busyElsewhere].filter((id) => !follower(id)));
  for (const s of input.steps) if (IN_FLIGHT_STEP_STATES.includes(s.state) && !follower(s.nodeId)) inFlight.add(s.nodeId);
  const unhealthy = new Set<string>();
  let seen = 0;
  for (const node of input.fleet.nodes.values()) {
    if (follower(node.id)) continue;
    seen++;
    if (!inFlight.has(node.id) && !node.healthy) unhealthy.add(node.id);
  }
  // Validators the coordinator has never heard of are counted as unhealthy too.
  const unknown = Math.max(0, input.fleet.n - seen);
  const f = faultTolerance(input.fleet.n);
  const budget = disruptionBudget(input.fleet.n, unhealthy.size + unknown, Math.min(inFlight.size, input.fleet.n));
  const chain = input.fleet.chain;
  const weighted = chain
    ? weightBudget(chain, chain.requireProducedBlock ? new Set([...inFlight, ...notBackOnChain(chain, input.steps, input.commands)]) : inFlight, chain.margin)
    : null;
  return { inFlight, unhealthy, budget, f, weighted };
}

/**
 * Whether the chain shows a node that was stopped taking part again: a finalized block it produced
 * in a leader view of its own after the stop. A block from before the stop proves nothing about the
 * node now, and a node still catching up does not vote.
 *
 * "After the stop" is read on the chain's own clock when the agent reported the node's view at the
 * stop (protocol 1.2): the proving block's view must be later. The coordinator's clock is not enough:
 * a block made just before the stop can come to be believed (f + 1 reports) after the result, so it
 * looked like proof (npm run sim, seeds 117, 162, 168). Without the view (an older agent), the
 * block must have been believed after `since`.
 */
function shownBackOnChain(v: ChainValidatorView | undefined, stoppedAtView: number | null, since: number): boolean {
  if (v?.verdict !== 'produced') return false;
  if (stoppedAtView != null) return v.provenView != null && v.provenView > stoppedAtView;
  return v.provenAt != null && v.provenAt > since;
}

/**
 * Nodes a command of this rollout took down and brought back (rolled back, or failed after their
 * agent rolled them back) that the chain has not shown back yet (shownBackOnChain). Until then their
 * weight counts as down, as for an upgraded node. Found by the simulation (npm run sim, seed 7): a
 * rollback took the next node down while the one rolled back just before was still syncing.
 */
function notBackOnChain(chain: NonNullable<FleetView['chain']>, steps: readonly Step[], commands: ReadonlyMap<string, CommandRecord>): string[] {
  const out: string[] = [];
  for (const s of steps) {
    if (s.state !== 'rolled_back' && s.state !== 'failed') continue;
    const cmd = s.commandId ? commands.get(s.commandId) : undefined;
    const since = s.finishedAt ?? Infinity; // moved in this very decision: it ended now
    if (!shownBackOnChain(chain.byNode.get(s.nodeId), cmd?.stoppedAtView ?? null, since)) out.push(s.nodeId);
  }
  return out;
}

// ============================================================== the decision

/**
 * Decides the next actions. Never dispatches more nodes than the disruption
 * budget allows, counting unhealthy nodes and everything in flight anywhere.
 *
 * Every decision first turns results and node status into step transitions,
 * then runs the one phase the rollout's state calls for.
 */
export function decide(input: SequencerInput): Action[] {
  const d = startDecision(input);
  advanceSteps(d);
  watchInFlightAgents(d);
  const { state, strategy } = input.rollout;
  const failures = newFailures(d);
  if (TERMINAL_ROLLOUT_STATES.includes(state) || state === 'paused') return d.out; // results are recorded, nothing dispatched
  if (GATE_STATES.includes(state)) passGate(d);
  else if (state === 'rolling_back') rollBack(d);
  // What is left is running or soaking.
  else if (failures.length > 0) stopOnFailures(d, failures);
  else if (state === 'soaking') soak(d);
  else if (strategy === 'halt') haltUpgrade(d);
  else rollingUpgrade(d);
  return d.out;
}

/** One decision: what it reads, the step states as it moves them, and the actions so far. */
interface Decision {
  readonly input: SequencerInput;
  readonly rollout: Rollout;
  readonly fleet: FleetView;
  readonly now: number;
  /** Step states as of this decision (advanceSteps and dispatches move them). */
  readonly states: Map<string, StepState>;
  readonly out: Action[];
  /** The upgrade dispatch counter: a rollback undoes nodes in the reverse order of their number. */
  seq: number;
  readonly limits: CanaryLimits;
}

function startDecision(input: SequencerInput): Decision {
  const { rollout } = input;
  return {
    input,
    rollout,
    fleet: input.fleet,
    now: input.now,
    states: new Map(input.steps.map((s) => [s.nodeId, s.state])),
    out: [],
    seq: rollout.data.dispatchSeq ?? 0,
    limits: { ...DEFAULT_CANARY_LIMITS, ...(rollout.options.canaryLimits ?? {}) },
  };
}

// -------------------------------------------------------------- small verbs

/** The steps whose state (as of this decision) is one of `states`, in position order. */
function stepsIn(d: Decision, ...states: StepState[]): Step[] {
  return d.input.steps.filter((s) => states.includes(d.states.get(s.nodeId)!));
}

/** The steps with their state as of this decision. */
function currentSteps(d: Decision): Step[] {
  // A step that ended in this decision ended now (its finishedAt is in the action, not yet in the row).
  return d.input.steps.map((s) => {
    const state = d.states.get(s.nodeId)!;
    return state === s.state ? s : { ...s, state, finishedAt: d.now };
  });
}

function moveRollout(d: Decision, to: RolloutState, code: ErrorCode | null = null, reason: string | null = null): void {
  d.out.push({ kind: 'rollout', to, code, reason });
}

function moveStep(d: Decision, nodeId: string, to: StepState, extra: Omit<StepAction, 'kind' | 'nodeId' | 'to'> = {}): void {
  d.out.push({ kind: 'step', nodeId, to, ...extra });
  d.states.set(nodeId, to);
}

function emit(d: Decision, type: string, nodeId?: string, data?: Record<string, unknown>): void {
  d.out.push({ kind: 'event', type, ...(nodeId !== undefined ? { nodeId } : {}), ...(data !== undefined ? { data } : {}) });
}

function patchData(d: Decision, data: Partial<RolloutData>): void {
  d.out.push({ kind: 'data', data });
}

type StepAction = Extract<Action, { kind: 'step' }>;

const STEP_FOR_COMMAND: Record<CommandKind, StepState> = { prepare: 'preparing', upgrade: 'upgrading', rollback: 'rolling_back' };

/** Sends `command` to the step's node and moves the step accordingly. */
function dispatch(d: Decision, step: Step, command: CommandKind, options?: UpgradeOptions): void {
  const { rollout, fleet, now } = d;
  const attempt = step.attempt + 1;
  const commandId = commandIdFor(rollout.id, step.nodeId, command, attempt);
  const node = fleet.nodes.get(step.nodeId);
  d.seq++;
  d.out.push({
    kind: 'step',
    nodeId: step.nodeId,
    to: STEP_FOR_COMMAND[command],
    patch: {
      startedAt: now,
      ...(command === 'upgrade' ? { dispatchSeq: d.seq } : {}),
      ...(command !== 'rollback' ? { fromVersion: node?.version ?? step.fromVersion } : {}),
    },
  });
  d.out.push({ kind: 'send', nodeId: step.nodeId, command, commandId, ...(options ? { options } : {}) });
  emit(d, 'node.dispatched', step.nodeId, { command, commandId, leader: fleet.leader, maxHeight: fleet.maxHeight });
  if (command === 'upgrade' && isUnprovenCanary(d, step.nodeId)) {
    patchData(d, { canaryBaseline: baselineOf(node?.metrics, d.limits.minRequests) });
  }
  d.states.set(step.nodeId, STEP_FOR_COMMAND[command]);
}

/** Saves the dispatch counter when this decision moved it. */
function saveDispatchSeq(d: Decision): void {
  if (d.seq !== (d.rollout.data.dispatchSeq ?? 0)) patchData(d, { dispatchSeq: d.seq });
}

function upgradeOptions(d: Decision, extra: UpgradeOptions = {}): UpgradeOptions {
  const { rollout, fleet } = d;
  return {
    ...(rollout.options.allowDowngrade ? { allowDowngrade: true } : {}),
    ...(fleet.maxHeight != null ? { referenceHeight: fleet.maxHeight } : {}),
    syncDistance: rollout.options.syncDistance,
    ...extra,
  };
}

/** The canary of a canary rollout that has not passed its soak yet. */
function isUnprovenCanary(d: Decision, nodeId: string): boolean {
  return d.rollout.strategy === 'canary' && nodeId === d.rollout.options.canary && !d.rollout.data.soakPassed;
}

/**
 * Healthy nodes of the rollout still waiting on the old version: the canary's yardstick. Nodes of
 * the canary's own role when there are any: followers behind a proxy carry other traffic than
 * validators, so a validator is judged against validators and a follower against followers.
 */
function referenceNodes(d: Decision): NodeView[] {
  const out: NodeView[] = [];
  for (const s of d.input.steps) {
    if (s.nodeId === d.rollout.options.canary || d.states.get(s.nodeId) !== 'pending') continue;
    const n = d.fleet.nodes.get(s.nodeId);
    if (n?.healthy && n.version !== d.rollout.target.version) out.push(n);
  }
  const canary = d.rollout.options.canary;
  const follower = canary != null && isFollower(d.fleet, canary);
  const sameRole = out.filter((n) => isFollower(d.fleet, n.id) === follower);
  return sameRole.length > 0 ? sameRole : out;
}

// -------------------------------------------------------------- every state: steps follow results

/**
 * An upgraded node is back only when the chain says so: a finalized block it
 * produced in a leader view of its own, believed after its agent reported the
 * result. Its own health report alone is not enough. Without a chain view (or
 * with the rule switched off) the agent's report decides, as before.
 */
function backOnChain(d: Decision, step: Step): boolean {
  const chain = d.fleet.chain;
  if (!chain?.requireProducedBlock) return true;
  // A follower produces no block: synced (isSynced) is all it can show.
  if (isFollower(d.fleet, step.nodeId)) return true;
  const cmd = step.commandId ? d.input.commands.get(step.commandId) : undefined;
  return shownBackOnChain(chain.byNode.get(step.nodeId), cmd?.stoppedAtView ?? null, step.resultAt ?? 0);
}

/**
 * Turns finished commands and node status into step transitions. Runs in every rollout state.
 * Outcomes per step state:
 *  - preparing: prepared, or failed with the agent's code;
 *  - upgrading: verifying (also when the node already ran the target), or failed;
 *  - verifying: upgraded once synced, or failed with E_SYNC_TIMEOUT;
 *  - rolling_back: rolled_back (also when nothing was left to undo and the node runs its old version), or failed.
 */
function advanceSteps(d: Decision): void {
  for (const step of d.input.steps) {
    const cmd = step.commandId ? d.input.commands.get(step.commandId) : undefined;
    const answered = cmd && isCommandFinished(cmd.state) ? cmd : undefined;
    const handler = STEP_ADVANCES[step.state];
    handler?.(d, step, answered);
  }
}

/**
 * How long an in-flight node's agent may stay away before the operator is told. Its node's
 * state is unknown meanwhile; it stays counted as down (in flight) until its result arrives,
 * so safety never depends on this, only the operator's knowing does.
 */
export const AGENT_LOST_MS = 30_000;

/**
 * Says once when the agent of a node in flight has been unreachable for AGENT_LOST_MS
 * (node.agent_lost, E_AGENT_LOST, also to webhooks) and once when it is back
 * (node.agent_back). Nothing moves: the step waits for the agent's result.
 */
function watchInFlightAgents(d: Decision): void {
  const lost = new Set(d.rollout.data.lostAgents ?? []);
  const before = lost.size;
  const changed: string[] = [];
  for (const step of stepsIn(d, ...IN_FLIGHT_STEP_STATES)) {
    const node = d.fleet.nodes.get(step.nodeId);
    const away = node?.agent !== 'connected';
    const since = Math.max(node?.lastSeenAt ?? 0, step.startedAt ?? 0);
    if (away && !lost.has(step.nodeId) && d.now - since >= AGENT_LOST_MS) {
      lost.add(step.nodeId);
      const seen = node?.lastSeenAt ? new Date(node.lastSeenAt).toISOString() : 'never';
      emit(d, 'node.agent_lost', step.nodeId, {
        code: 'E_AGENT_LOST',
        step: step.state,
        message: `the agent of ${step.nodeId} has not reported for ${Math.round((d.now - since) / 1000)} s during ${step.state} (last seen ${seen}); its node counts as down until its result arrives`,
      });
      changed.push(step.nodeId);
    } else if (!away && lost.has(step.nodeId)) {
      lost.delete(step.nodeId);
      emit(d, 'node.agent_back', step.nodeId, { step: step.state });
      changed.push(step.nodeId);
    }
  }
  // A node that left flight while its agent was away (its result came in a hello) is no longer watched.
  for (const id of lost) if (!IN_FLIGHT_STEP_STATES.includes(d.states.get(id)!)) lost.delete(id);
  if (changed.length > 0 || lost.size !== before) patchData(d, { lostAgents: [...lost] });
}

type StepAdvance = (d: Decision, step: Step, answered: CommandRecord | undefined) => void;

const succeeded = (c: CommandRecord) => c.state === 'completed' && c.outcome === 'succeeded';

const STEP_ADVANCES: Partial<Record<StepState, StepAdvance>> = {
  preparing(d, step, cmd) {
    if (!cmd) return;
    if (succeeded(cmd)) moveStep(d, step.nodeId, 'prepared');
    else moveStep(d, step.nodeId, 'failed', { code: cmd.code ?? 'E_NODE_FAILED', message: cmd.message, patch: { finishedAt: d.now } });
  },
  upgrading(d, step, cmd) {
    if (!cmd) return;
    if (succeeded(cmd) || (cmd.state === 'rejected' && cmd.code === 'E_SAME_VERSION')) {
      moveStep(d, step.nodeId, 'verifying', { patch: { resultAt: d.now, downtimeMs: cmd.downtimeMs } });
      return;
    }
    moveStep(d, step.nodeId, 'failed', { code: cmd.code ?? 'E_NODE_FAILED', message: cmd.message, patch: { finishedAt: d.now, downtimeMs: cmd.downtimeMs } });
    emit(d, 'node.failed', step.nodeId, { code: cmd.code, outcome: cmd.outcome, runningVersion: cmd.runningVersion, message: cmd.message });
  },
  verifying(d, step) {
    const { rollout, fleet, now } = d;
    if (isSynced(fleet.nodes.get(step.nodeId), rollout.target.version, fleet, rollout.options.syncDistance) && backOnChain(d, step)) {
      moveStep(d, step.nodeId, 'upgraded', { patch: { syncedAt: now, finishedAt: now } });
      emit(d, 'node.upgraded', step.nodeId, { version: rollout.target.version, downtimeMs: step.downtimeMs });
    } else if (step.resultAt != null && now - step.resultAt > rollout.options.syncTimeoutMs) {
      const chainSaid = isSynced(fleet.nodes.get(step.nodeId), rollout.target.version, fleet, rollout.options.syncDistance);
      const message = chainSaid
        ? `the chain has not shown the node producing a block in a leader view of its own since it came back (${fleet.chain?.byNode.get(step.nodeId)?.evidence ?? 'no evidence'})`
        : 'the node did not report synced in time';
      moveStep(d, step.nodeId, 'failed', { code: 'E_SYNC_TIMEOUT', message, patch: { finishedAt: now } });
      emit(d, 'node.failed', step.nodeId, { code: 'E_SYNC_TIMEOUT' });
    }
  },
  rolling_back(d, step, cmd) {
    if (!cmd) return;
    const nothingLeftToUndo = cmd.state === 'rejected' && cmd.code === 'E_NOTHING_TO_ROLLBACK' && d.fleet.nodes.get(step.nodeId)?.version === step.fromVersion;
    if (succeeded(cmd) || nothingLeftToUndo) {
      moveStep(d, step.nodeId, 'rolled_back', { patch: { finishedAt: d.now } });
      emit(d, 'node.rolled_back', step.nodeId, { runningVersion: cmd.runningVersion });
    } else {
      moveStep(d, step.nodeId, 'failed', { code: cmd.code ?? 'E_ROLLBACK_FAILED', message: cmd.message, patch: { finishedAt: d.now } });
      emit(d, 'node.rollback_failed', step.nodeId, { code: cmd.code });
    }
  },
};

// -------------------------------------------------------------- planned, scheduled, awaiting approval: the gate

const GATE_STATES: readonly RolloutState[] = ['planned', 'scheduled', 'awaiting_approval'];

/** Where the gate lets a rollout go: approval first, then the window, then it runs. */
function gateOf(d: Decision): RolloutState {
  const { rollout } = d;
  if (rollout.options.requireApproval && rollout.data.approvedAt == null) return 'awaiting_approval';
  if (rollout.options.window && !d.input.windowOpen) return 'scheduled';
  return 'running';
}

/** Outcomes: stays; moves to awaiting_approval or scheduled; or starts running. */
function passGate(d: Decision): void {
  const next = gateOf(d);
  if (next === d.rollout.state) return;
  moveRollout(d, next);
  if (next === 'running') emit(d, 'rollout.started');
}

// -------------------------------------------------------------- rolling back

/**
 * Undoes the upgraded nodes in the reverse order of their upgrade, within the budget.
 * Outcomes: rollbacks dispatched; rolled_back once nothing is left to undo; failed when a node
 * could not be rolled back.
 *
 * The arithmetic, worked for n = 4 (f = 1), maxUnavailable 1, v1 still verifying (it counts as
 * in flight, so budget = f - in flight = 1 - 1 = 0) and v2 upgraded:
 *   ownDown           = 0  (our upgrading / rolling_back nodes; verifying ones are up)
 *   verifyingToUndo   = 1  (v1: already counted in flight, undoing it takes nothing more down)
 *   slots = min(max(1, maxUnavailable) - ownDown, budget + verifyingToUndo) = min(1, 1) = 1
 * so v1 (the last dispatched) is rolled back first, v2 once v1 is back.
 * A halt rollout stopped the whole network together, and undoes it together.
 */
function rollBack(d: Decision): void {
  const { rollout, fleet } = d;
  for (const step of undoneByHand(d)) {
    moveStep(d, step.nodeId, 'rolled_back', { patch: { finishedAt: d.now } });
    emit(d, 'node.rolled_back', step.nodeId, { runningVersion: step.fromVersion, by: 'hand' });
  }
  const { budget, weighted: byWeight } = disruption({ fleet, steps: currentSteps(d), busyElsewhere: d.input.busyElsewhere, commands: d.input.commands });
  const follower = (s: Step) => isFollower(fleet, s.nodeId);
  const undoAll = [...stepsIn(d, 'upgraded', 'verifying'), ...leftOnTarget(d)].sort((a, b) => (b.dispatchSeq ?? 0) - (a.dispatchSeq ?? 0));
  // Followers are undone beside the validators, outside the budget (as they went).
  rollBackFollowers(d, undoAll.filter(follower));
  const ownDown = stepsIn(d, 'upgrading', 'rolling_back').filter((s) => !follower(s)).length;
  const toUndo = undoAll.filter((s) => !follower(s));
  const verifyingToUndo = toUndo.filter((s) => d.states.get(s.nodeId) === 'verifying').length;
  const weighted = rollout.strategy !== 'halt' ? byWeight : null;
  let slots =
    rollout.strategy === 'halt'
      ? toUndo.length
      : weighted
        ? Math.max(1, rollout.options.maxUnavailable) - ownDown
        : Math.min(Math.max(1, rollout.options.maxUnavailable) - ownDown, budget + verifyingToUndo);
  let slack = weighted?.slack ?? 0;
  let blockedBy: number | null = null;
  for (const step of toUndo) {
    if (slots <= 0) break;
    const node = fleet.nodes.get(step.nodeId);
    if (!node?.connected || node.busy) continue;
    if (weighted && fleet.chain) {
      // A node proven down costs nothing and goes whatever the slack: undoing it is what brings its
      // weight back. One the slack does not count may still be up in truth (only not proven back):
      // with the slack already below zero, taking it down too could stop the chain (seed 7).
      const down = provenDown(d, step);
      const cost = down ? 0 : rollbackCost(d, step, weighted);
      if (!down && (cost > slack || slack < 0)) {
        blockedBy ??= cost;
        continue;
      }
      slack -= cost;
    }
    dispatch(d, step, 'rollback');
    slots--;
  }
  saveDispatchSeq(d);
  if (stepsIn(d, 'upgrading', 'rolling_back', 'upgraded', 'verifying').length + leftOnTarget(d).length > 0) {
    // Waiting on the chain's slack says so, as dispatch does (npm run sim, seed 2417).
    noteWaiting(
      d,
      blockedBy != null && weighted && stepsIn(d, 'rolling_back').length === 0 ? slackShortfall(weighted, blockedBy, fleet.chain?.margin ?? 0) : null,
    );
    pauseRollbackIfNeverSafe(d);
    return;
  }
  noteWaiting(d, null);
  const rollbackFailed = stepsIn(d, 'failed').some((s) => s.code === 'E_ROLLBACK_FAILED' || s.code === 'E_RESTORE');
  if (rollbackFailed) moveRollout(d, 'failed', 'E_ROLLBACK_FAILED', 'a node could not be rolled back');
  else moveRollout(d, 'rolled_back', rollout.code, rollout.reason);
}

/** Rolls back followers, at most maxUnavailable of them down at once; no slack is spent on them. */
function rollBackFollowers(d: Decision, toUndo: Step[]): void {
  let slots = Math.max(1, d.rollout.options.maxUnavailable) - stepsIn(d, 'upgrading', 'rolling_back').filter((s) => isFollower(d.fleet, s.nodeId)).length;
  for (const step of toUndo) {
    if (slots <= 0) break;
    const node = d.fleet.nodes.get(step.nodeId);
    if (!node?.connected || node.busy) continue;
    dispatch(d, step, 'rollback');
    slots--;
  }
}

/**
 * Upgraded nodes that report their old version again: undone by hand (guts-upgrade-agent rollback
 * on the host, what a rollback paused E_DISRUPTION_BUDGET asks for). Nothing is sent to them; a
 * rollback command would only wait for a slack the set never has (npm run sim, seed 5).
 */
function undoneByHand(d: Decision): Step[] {
  const target = d.rollout.target.version;
  return stepsIn(d, 'upgraded').filter((s) => {
    const node = d.fleet.nodes.get(s.nodeId);
    return s.fromVersion != null && s.fromVersion !== target && node?.healthy === true && node.version === s.fromVersion;
  });
}

/**
 * Nodes whose upgrade the agent reported done but the coordinator failed for not syncing back
 * (E_SYNC_TIMEOUT): they still run the target, so a rollback undoes them too. Left alone, the
 * weight they keep down could hold every other rollback back forever (npm run sim, seed 2417).
 */
function leftOnTarget(d: Decision): Step[] {
  return stepsIn(d, 'failed').filter((s) => s.code === 'E_SYNC_TIMEOUT' && d.fleet.nodes.get(s.nodeId)?.version === d.rollout.target.version);
}

/**
 * The weight a rollback takes out of the slack: none for a node the slack does not count as live
 * (in flight, not shown back on the chain, or not live), its whole weight otherwise.
 */
function rollbackCost(d: Decision, step: Step, weighted: WeightBudget): number {
  if (d.states.get(step.nodeId) === 'verifying' || weighted.notLive.some((v) => v.managedBy === step.nodeId)) return 0;
  return nodeWeight(d.fleet.chain!, step.nodeId) ?? Infinity;
}

/** Down in truth: unhealthy by its agent and not live on the chain (a bad build broke it; npm run sim, seed 73). */
function provenDown(d: Decision, step: Step): boolean {
  const node = d.fleet.nodes.get(step.nodeId);
  return d.states.get(step.nodeId) !== 'verifying' && !node?.healthy && d.fleet.chain?.byNode.get(step.nodeId)?.live === false;
}

// -------------------------------------------------------------- running or soaking: new failures

/** Failed steps the operator has not seen yet (a resume marks the ones seen as handled). */
function newFailures(d: Decision): Step[] {
  const handled = new Set(d.rollout.data.handledFailures ?? []);
  return stepsIn(d, 'failed').filter((s) => !handled.has(s.nodeId));
}

/**
 * Stops the rollout on a failure. Outcomes, in order of precedence:
 *  - failed, when a halt rollout's prepare failed before anything was stopped (no downtime yet);
 *  - failed E_CANARY_FAILED, when the canary failed its upgrade (its agent rolled it back);
 *  - rolling_back, with autoRollback;
 *  - paused, for the operator to decide.
 */
function stopOnFailures(d: Decision, failures: Step[]): void {
  const { rollout } = d;
  const handled = rollout.data.handledFailures ?? [];
  const nodes = failures.map((s) => s.nodeId);
  patchData(d, { handledFailures: [...new Set(handled), ...nodes] });
  // The agent's code goes into the reason: it is what the operator searches for.
  // A step failed in this very decision still carries its old code; its command has the agent's.
  const codeOf = (s: Step) => s.code ?? (s.commandId ? d.input.commands.get(s.commandId)?.code : null) ?? null;
  const names = failures.map((s) => (codeOf(s) ? `${s.nodeId} (${codeOf(s)})` : s.nodeId)).join(', ');
  const haltNotStarted = rollout.strategy === 'halt' && stepsIn(d, 'preparing', 'prepared', 'pending').length > 0 && rollout.data.haltSentAt == null;
  if (haltNotStarted) {
    moveRollout(d, 'failed', 'E_NODE_FAILED', `prepare failed on ${names}`);
    emit(d, 'rollout.failed', undefined, { nodes });
  } else if (failures.some((s) => isUnprovenCanary(d, s.nodeId))) {
    moveRollout(d, 'failed', 'E_CANARY_FAILED', `canary ${names} failed its upgrade and was rolled back by its agent`);
    emit(d, 'rollout.failed', undefined, { nodes, code: 'E_CANARY_FAILED' });
  } else if (rollout.options.autoRollback) {
    moveRollout(d, 'rolling_back', 'E_NODE_FAILED', `${names} failed; rolling back the upgraded nodes`);
    emit(d, 'rollout.rolling_back', undefined, { nodes });
  } else {
    moveRollout(d, 'paused', 'E_NODE_FAILED', `${names} failed (rolled back by its agent); the operator decides`);
    emit(d, 'rollout.paused', undefined, { nodes, code: 'E_NODE_FAILED' });
  }
}

// -------------------------------------------------------------- soaking: the canary proves itself

/**
 * Watches the upgraded canary for soakMs. Outcomes: waits (also while its agent is unreachable:
 * a lost link alone is no proof of failure); passes and resumes running; or fails the soak and
 * rolls back (unhealthy, wrong version, fell behind, no block finalized, metrics regressed).
 */
function soak(d: Decision): void {
  const { rollout, fleet, now } = d;
  const canary = rollout.options.canary!;
  const node = fleet.nodes.get(canary);
  if (!node?.connected) return;
  const why = soakFault(d, node);
  if (why) return failSoak(d, canary, why);
  if (now - (rollout.data.soakStartedAt ?? now) < rollout.options.soakMs) return;
  const startHeight = rollout.data.soakStartHeight;
  if (startHeight != null && node.finalizedHeight != null && node.finalizedHeight <= startHeight) {
    return failSoak(d, canary, 'no block was finalized during the soak');
  }
  const soakMetrics = rollout.data.soakMetrics ?? {};
  const verdict = judgeCanary({
    canary: { start: soakMetrics[canary] ?? null, now: node.metrics },
    reference: referenceNodes(d).map((r) => ({ nodeId: r.id, start: soakMetrics[r.id] ?? null, now: r.metrics })),
    baseline: rollout.data.canaryBaseline ?? null,
    limits: d.limits,
  });
  if (!verdict.ok) return failSoak(d, canary, `metrics: ${verdict.detail}`);
  if (!verdict.judged && rollout.options.requireJudgedSoak) {
    return failSoak(d, canary, `its metrics judged nothing (${verdict.detail}) and the rollout requires a judged soak`, 'E_CANARY_UNJUDGED');
  }
  patchData(d, { soakPassed: true, lastStableAt: now });
  emit(d, 'canary.passed', canary, { judged: verdict.judged, metrics: verdict });
  moveRollout(d, 'running');
}

/** What is wrong with the canary at any moment of the soak, if anything. */
function soakFault(d: Decision, node: NodeView): string | null {
  const { rollout, fleet } = d;
  if (!node.healthy) return 'the node is not healthy';
  if (node.version !== rollout.target.version) return `it runs ${node.version ?? 'nothing'}`;
  if (!isSynced(node, rollout.target.version, fleet, rollout.options.syncDistance)) return 'it fell behind the fleet';
  return null;
}

function failSoak(d: Decision, canary: string, why: string, code: 'E_CANARY_FAILED' | 'E_CANARY_UNJUDGED' = 'E_CANARY_FAILED'): void {
  moveRollout(d, 'rolling_back', code, `canary ${canary} failed its soak: ${why}`);
  emit(d, 'rollout.rolling_back', canary, { code, why });
}

// -------------------------------------------------------------- running: rolling and canary

/**
 * One wave at a time, non-leaders first and the leader last. Outcomes: waits for the wave in
 * flight to sync; starts the canary's soak; completes or fails when no node is left; waits
 * stabilizationMs after the last wave; skips nodes already on the target; dispatches the next wave.
 */
function rollingUpgrade(d: Decision): void {
  if (stepsIn(d, 'upgrading', 'verifying').length > 0) return; // wait for the wave to be synced
  const pending = stepsIn(d, 'pending');
  const lastStable = lastStableAt(d);
  if (startCanarySoak(d)) return;
  if (canaryLost(d)) return;
  if (pending.length === 0) return finishRolling(d);
  if (lastStable > 0 && d.now - lastStable < d.rollout.options.stabilizationMs) return;
  skipUpToDate(d, pending);
  const left = pending.filter((s) => d.states.get(s.nodeId) === 'pending');
  if (left.length > 0 && pauseIfFollowerIsValidator(d, left)) return;
  if (left.length > 0 && pauseIfNeverSafe(d, left)) return;
  if (dispatchFollowers(d, left)) return;
  dispatchWave(
    d,
    left.filter((s) => !isFollower(d.fleet, s.nodeId)),
  );
}

/**
 * Followers go first, in waves of their own of at most maxUnavailable nodes (a follower serves
 * the API: the cap keeps most of them serving), outside the safety budget: no slack is spent, no
 * binding to a chain validator is needed, the leader rule does not apply. A new build then meets
 * real traffic on nodes whose failure costs the chain nothing before any validator takes it.
 * A follower that cannot go now (down, busy, agent away) does not hold the validators back; one
 * that only waits for a slot in its wave does (followers first).
 * Before the canary has passed its soak only the canary goes, follower or not.
 * Returns whether followers went or wait for a slot (then the validators wait too).
 */
function dispatchFollowers(d: Decision, candidates: Step[]): boolean {
  const { rollout, fleet } = d;
  const canaryFirst = rollout.strategy === 'canary' && !rollout.data.soakPassed;
  const ready = candidates.filter((s) => {
    if (!isFollower(fleet, s.nodeId) || (canaryFirst && s.nodeId !== rollout.options.canary)) return false;
    const node = fleet.nodes.get(s.nodeId);
    return !!node?.connected && node.healthy && !node.busy && !d.input.busyElsewhere.has(s.nodeId);
  });
  if (ready.length === 0) return false;
  // The cap counts the followers already on their way: a wave of them is still a wave next tick.
  const flying = stepsIn(d, 'upgrading', 'verifying', 'rolling_back').filter((s) => isFollower(fleet, s.nodeId)).length;
  const slots = Math.max(1, rollout.options.maxUnavailable) - flying;
  for (const step of ready.sort((a, b) => a.position - b.position).slice(0, Math.max(0, slots))) {
    dispatch(d, step, 'upgrade', upgradeOptions(d));
  }
  saveDispatchSeq(d);
  noteWaiting(d, null);
  return true;
}

/**
 * A node registered as a follower that the chain shows to be a validator (its key in the set, or
 * it leads) is never upgraded outside the budget on its registration alone: the rollout pauses
 * and says which node and why, for the operator to fix the registration. Returns whether it paused.
 */
function pauseIfFollowerIsValidator(d: Decision, left: Step[]): boolean {
  const offenders = contradictedFollowers(
    d.fleet,
    left.map((s) => s.nodeId),
  );
  if (offenders.length === 0) return false;
  moveRollout(d, 'paused', 'E_FOLLOWER_IS_VALIDATOR', offenders.map((o) => o.why).join('; '));
  emit(d, 'rollout.paused', undefined, { code: 'E_FOLLOWER_IS_VALIDATOR', nodes: offenders.map((o) => o.nodeId) });
  return true;
}

/**
 * The validator set changed under a running rollout (a new epoch, new weights) and a node left
 * to upgrade is now heavier than the largest slack the set can ever have: waiting would never
 * end, so the rollout pauses and says why. Returns whether it paused.
 */
function pauseIfNeverSafe(d: Decision, left: Step[]): boolean {
  const chain = d.fleet.chain;
  if (chain?.status !== 'adopted') return false;
  const offenders = neverSafe(
    chain,
    left.map((s) => s.nodeId),
  );
  if (offenders.length === 0) return false;
  const reason = neverSafeMessage(chain, offenders);
  moveRollout(d, 'paused', 'E_DISRUPTION_BUDGET', reason);
  emit(d, 'rollout.paused', undefined, { code: 'E_DISRUPTION_BUDGET', nodes: offenders.map((o) => o.nodeId), epoch: chain.epoch });
  return true;
}

/**
 * A rollback that can only wait forever pauses instead: nothing of it is in flight, and every node
 * left to undo is heavier than any slack the set can have (an epoch made it so after its upgrade;
 * npm run sim, seed 5). Resuming goes on rolling back (data.pausedFrom).
 */
function pauseRollbackIfNeverSafe(d: Decision): void {
  const chain = d.fleet.chain;
  if (d.rollout.strategy === 'halt' || chain?.status !== 'adopted') return;
  if (stepsIn(d, 'upgrading', 'rolling_back', 'verifying').length > 0) return;
  const left = stepsIn(d, 'upgraded').filter((s) => chain.byNode.get(s.nodeId)?.live !== false || d.fleet.nodes.get(s.nodeId)?.healthy);
  const offenders = neverSafe(
    chain,
    left.map((s) => s.nodeId),
  );
  if (left.length === 0 || offenders.length < left.length) return;
  const reason = neverSafeMessage(chain, offenders, 'rollback');
  moveRollout(d, 'paused', 'E_DISRUPTION_BUDGET', reason);
  patchData(d, { pausedFrom: 'rolling_back' });
  emit(d, 'rollout.paused', undefined, { code: 'E_DISRUPTION_BUDGET', nodes: offenders.map((o) => o.nodeId), epoch: chain.epoch });
}

/** Records why dispatch waits (once per new reason), or clears it when dispatch goes on. */
function noteWaiting(d: Decision, reason: string | null): void {
  if ((d.rollout.data.waiting ?? null) === reason) return;
  patchData(d, { waiting: reason });
  if (reason) emit(d, 'rollout.waiting', undefined, { reason });
}

/** When the last wave finished syncing (now, when one just did). */
function lastStableAt(d: Decision): number {
  const justSynced = d.input.steps.reduce(
    (m, s) => Math.max(m, s.state === 'verifying' && d.states.get(s.nodeId) === 'upgraded' ? d.now : (s.syncedAt ?? 0)),
    0,
  );
  return Math.max(d.rollout.data.lastStableAt ?? 0, justSynced);
}

/** The canary is upgraded and synced: record where the soak starts from and start it. Returns whether it did. */
function startCanarySoak(d: Decision): boolean {
  const { rollout, fleet, now } = d;
  if (rollout.strategy !== 'canary' || rollout.data.soakPassed) return false;
  const canary = d.input.steps.find((s) => s.nodeId === rollout.options.canary);
  if (!canary || d.states.get(canary.nodeId) !== 'upgraded') return false;
  const soakMetrics: Record<string, Counters> = {};
  for (const n of [fleet.nodes.get(canary.nodeId), ...referenceNodes(d)]) {
    if (n?.metrics) soakMetrics[n.id] = { requestsTotal: n.metrics.requestsTotal, errorsTotal: n.metrics.errorsTotal };
  }
  patchData(d, { soakStartedAt: now, soakStartHeight: fleet.nodes.get(canary.nodeId)?.finalizedHeight ?? null, soakMetrics });
  emit(d, 'canary.soaking', canary.nodeId, { soakMs: rollout.options.soakMs });
  moveRollout(d, 'soaking');
  return true;
}

/**
 * The canary failed and the operator resumed anyway: only the canary may go before its soak, so
 * nothing would ever be dispatched again and the rollout would wait forever without a reason
 * (npm run sim, seed 616). It fails as a failed canary does. Returns whether it did.
 */
function canaryLost(d: Decision): boolean {
  const { rollout } = d;
  if (rollout.strategy !== 'canary' || rollout.data.soakPassed) return false;
  const canary = d.input.steps.find((s) => s.nodeId === rollout.options.canary);
  const state = canary ? d.states.get(canary.nodeId) : undefined;
  if (state !== 'failed' && state !== 'rolled_back') return false;
  moveRollout(
    d,
    'failed',
    'E_CANARY_FAILED',
    `canary ${canary!.nodeId} ${state === 'failed' ? 'failed its upgrade' : 'was rolled back'}; the rollout cannot go on without a canary that passed its soak`,
  );
  emit(d, 'rollout.failed', undefined, { nodes: [canary!.nodeId], code: 'E_CANARY_FAILED' });
  return true;
}

/** No node left to dispatch: completed, or failed naming the nodes that failed. */
function finishRolling(d: Decision): void {
  const failed = stepsIn(d, 'failed');
  if (failed.length > 0) {
    moveRollout(d, 'failed', 'E_NODE_FAILED', `finished with ${failed.length} failed node(s): ${failed.map((s) => s.nodeId).join(', ')}`);
    emit(d, 'rollout.failed', undefined, { nodes: failed.map((s) => s.nodeId) });
  } else {
    moveRollout(d, 'completed');
    emit(d, 'rollout.completed');
  }
}

/** Nodes already on the target need no command. */
function skipUpToDate(d: Decision, pending: Step[]): void {
  for (const step of pending) {
    const node = d.fleet.nodes.get(step.nodeId);
    if (node?.version === d.rollout.target.version && node.healthy && !node.busy) {
      moveStep(d, step.nodeId, 'skipped', { message: 'already at the target version', patch: { finishedAt: d.now } });
    }
  }
}

/**
 * Dispatches the next wave among `candidates` (the pending steps).
 *
 * The arithmetic, worked for n = 7 validators (f = 2) with one node unhealthy for unrelated
 * reasons, none in flight and maxUnavailable 2:
 *   budget = f - unhealthy - inFlight = 2 - 1 - 0 = 1   (disruption(): never more than f down)
 *   slots  = min(budget, maxUnavailable) = min(1, 2) = 1
 * so one node goes now and the next once it is synced. The leader goes last: it is left out
 * while any other candidate remains, and leadership rotates, so this is re-evaluated on every
 * tick, right before dispatch. Before the canary passed its soak, only the canary may go.
 */
function dispatchWave(d: Decision, candidates: Step[]): void {
  const { rollout, fleet } = d;
  if (candidates.length === 0) return;
  const eligible = candidates.filter((s) => !(rollout.strategy === 'canary' && !rollout.data.soakPassed) || s.nodeId === rollout.options.canary);
  const { budget, weighted } = disruption({ fleet, steps: currentSteps(d), busyElsewhere: d.input.busyElsewhere, commands: d.input.commands });
  if (weighted && fleet.chain) return dispatchWeightedWave(d, eligible, weighted);
  let slots = Math.min(budget, rollout.options.maxUnavailable);
  if (slots <= 0) return;
  const nonLeaders = eligible.filter((s) => s.nodeId !== fleet.leader);
  if (nonLeaders.length === 0 && eligible.length > 1) return;
  const wave = nonLeaders.length > 0 ? nonLeaders : eligible;
  for (const step of wave.sort((a, b) => a.position - b.position)) {
    if (slots <= 0) break;
    const node = fleet.nodes.get(step.nodeId);
    if (!node?.connected || !node.healthy || node.busy || d.input.busyElsewhere.has(step.nodeId)) continue;
    dispatch(d, step, 'upgrade', upgradeOptions(d));
    slots--;
  }
  saveDispatchSeq(d);
}

/**
 * The same wave by voting weight: the chain's set is adopted and believed. Each node goes only
 * if its validator's weight fits in the slack proven now (live weight − quorum − margin), at most
 * maxUnavailable nodes, non-leaders first. Worked for weights 4,1,1,1,1,1,1,1,1,1 (quorum 9),
 * all live, maxUnavailable 3: slack 4; three weight-1 validators go (slack left 1); the
 * weight-4 one waits until they are back, then goes alone (4 ≤ 4). When nothing fits, the
 * rollout waits and says why, and goes on by itself when the slack returns.
 */
function dispatchWeightedWave(d: Decision, eligible: Step[], budget: WeightBudget): void {
  const { rollout, fleet } = d;
  const chain = fleet.chain!;
  if (chain.status !== 'adopted')
    return noteWaiting(d, `the validator set is not believed (${chain.alerts.map((a) => a.code).join(', ') || chain.status}): dispatch waits`);
  const nonLeaders = eligible.filter((s) => s.nodeId !== fleet.leader);
  if (nonLeaders.length === 0 && eligible.length > 1) return;
  const wave = (nonLeaders.length > 0 ? nonLeaders : eligible).sort((a, b) => a.position - b.position);
  let slots = rollout.options.maxUnavailable;
  let slack = budget.slack;
  let blocked: { nodeId: string; weight: number } | null = null;
  let unbound: string | null = null;
  for (const step of wave) {
    if (slots <= 0) break;
    const node = fleet.nodes.get(step.nodeId);
    if (!node?.connected || !node.healthy || node.busy || d.input.busyElsewhere.has(step.nodeId)) continue;
    const weight = nodeWeight(chain, step.nodeId);
    if (weight == null) {
      unbound ??= step.nodeId;
      continue;
    }
    if (weight > slack) {
      blocked ??= { nodeId: step.nodeId, weight };
      continue;
    }
    dispatch(d, step, 'upgrade', upgradeOptions(d));
    slack -= weight;
    slots--;
  }
  saveDispatchSeq(d);
  if (slots < rollout.options.maxUnavailable) return noteWaiting(d, null);
  if (blocked) return noteWaiting(d, `${slackShortfall(budget, blocked.weight, chain.margin)} (next: ${blocked.nodeId}, weight ${blocked.weight})`);
  if (unbound)
    return noteWaiting(d, `node ${unbound} is not bound to a validator of epoch ${chain.epoch}: bind it (agent validatorPubkey or --pubkey at registration)`);
}

// -------------------------------------------------------------- running: halt (the whole network at once)

/**
 * A halt upgrade: stage the artifact everywhere while the network runs, then stop the world
 * inside the window with approval, then wait for the chain to finalize past the halt height.
 */
function haltUpgrade(d: Decision): void {
  if (d.rollout.data.haltSentAt == null) {
    stageEverywhere(d);
    if (stepsIn(d, 'prepared').length < d.input.steps.length) return saveDispatchSeq(d);
    if (!haltGateOpen(d)) return;
    startHalt(d);
    return;
  }
  awaitFinalization(d);
}

/** Phase 1: every pending node stages the artifact (a prepare command); the network keeps running. */
function stageEverywhere(d: Decision): void {
  for (const step of d.input.steps) {
    if (d.states.get(step.nodeId) === 'pending') dispatch(d, step, 'prepare', upgradeOptions(d, { approvedMajor: d.rollout.pathKind === 'major' }));
  }
}

/** Phase 2 gate: everything is staged; stop the world only inside the window, with approval. Outcomes: open, paused, awaiting_approval. */
function haltGateOpen(d: Decision): boolean {
  const { rollout } = d;
  if (rollout.options.window && !d.input.windowOpen) {
    moveRollout(d, 'paused', 'E_WINDOW_CLOSED', 'the maintenance window closed before the halt could start');
    return false;
  }
  if (rollout.options.requireApproval && rollout.data.approvedAt == null) {
    moveRollout(d, 'awaiting_approval', 'E_NOT_APPROVED', 'the halt upgrade needs approval');
    return false;
  }
  return true;
}

/** Phase 2: every node switches to its staged artifact at once; the halt height is recorded. */
function startHalt(d: Decision): void {
  const { rollout, fleet, now } = d;
  for (const step of d.input.steps) {
    dispatch(d, step, 'upgrade', upgradeOptions(d, { requireStaged: true, approvedMajor: rollout.pathKind === 'major' }));
  }
  patchData(d, { haltSentAt: now, haltHeight: fleet.maxHeight });
  emit(d, 'halt.started', undefined, { height: fleet.maxHeight });
  saveDispatchSeq(d);
}

/**
 * Phase 3: wait until every node is back and the chain finalizes past the halt height.
 * Outcomes: waits; failed when a node failed; completed; paused E_CHAIN_STALL after haltTimeoutMs.
 */
function awaitFinalization(d: Decision): void {
  const { rollout, fleet, now } = d;
  if (stepsIn(d, 'upgrading', 'verifying').length > 0) return;
  if (stepsIn(d, 'failed').length > 0) return moveRollout(d, 'failed', 'E_NODE_FAILED', 'some nodes failed the halt upgrade');
  const haltHeight = rollout.data.haltHeight ?? -1;
  if (fleet.maxHeight != null && fleet.maxHeight > haltHeight) {
    emit(d, 'halt.finalizing', undefined, { height: fleet.maxHeight });
    emit(d, 'rollout.completed');
    moveRollout(d, 'completed');
  } else if (now - rollout.data.haltSentAt! > rollout.options.haltTimeoutMs) {
    moveRollout(d, 'paused', 'E_CHAIN_STALL', 'the chain did not finalize after the halt upgrade');
    emit(d, 'rollout.paused', undefined, { code: 'E_CHAIN_STALL' });
  }
}
