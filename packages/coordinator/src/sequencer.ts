/**
 * The sequencer: a pure function from (rollout, its steps, the commands sent,
 * the fleet as seen now) to the next actions. All IO (SQLite, websockets,
 * webhooks) lives around it in engine.ts, so every safety rule — never more
 * than f down, leader last, wait for sync, canary soak, halt gating — is
 * testable without a network, and a restarted coordinator recomputes the same
 * decision from the persisted state.
 */
import { disruptionBudget, faultTolerance, type CommandKind, type ErrorCode, type UpgradeOptions } from '@guts-upgrade/protocol';
import { baselineOf, DEFAULT_CANARY_LIMITS, judgeCanary, type Counters } from './canary.js';
import type { CommandRecord, FleetView, NodeView, Rollout, RolloutData, Step } from './model.js';
import { IN_FLIGHT_STEP_STATES, TERMINAL_ROLLOUT_STATES, type RolloutState, type StepState } from './states.js';

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
  if (!node || !node.healthy || node.version !== version) return false;
  if (fleet.maxHeight == null) return true;
  return node.finalizedHeight != null && node.finalizedHeight >= fleet.maxHeight - syncDistance;
}

/** Nodes that are down or at risk right now, split into "in flight" (ours or others') and "unhealthy". */
export function disruption(input: Pick<SequencerInput, 'fleet' | 'steps' | 'busyElsewhere'>): {
  inFlight: Set<string>;
  unhealthy: Set<string>;
  budget: number;
  f: number;
} {
  const inFlight = new Set<string>(input.busyElsewhere);
  for (const s of input.steps) if (IN_FLIGHT_STEP_STATES.includes(s.state)) inFlight.add(s.nodeId);
  const unhealthy = new Set<string>();
  let seen = 0;
  for (const node of input.fleet.nodes.values()) {
    seen++;
    if (!inFlight.has(node.id) && !node.healthy) unhealthy.add(node.id);
  }
  // Validators the coordinator has never heard of are counted as unhealthy too.
  const unknown = Math.max(0, input.fleet.n - seen);
  const f = faultTolerance(input.fleet.n);
  const budget = disruptionBudget(input.fleet.n, unhealthy.size + unknown, Math.min(inFlight.size, input.fleet.n));
  return { inFlight, unhealthy, budget, f };
}

/** Healthy nodes of the rollout still waiting on the old version: the canary's yardstick. */
function referenceNodes(input: SequencerInput, states: Map<string, StepState>): NodeView[] {
  const out: NodeView[] = [];
  for (const s of input.steps) {
    if (s.nodeId === input.rollout.options.canary || states.get(s.nodeId) !== 'pending') continue;
    const n = input.fleet.nodes.get(s.nodeId);
    if (n?.healthy && n.version !== input.rollout.target.version) out.push(n);
  }
  return out;
}

function stepByNode(steps: Step[]): Map<string, Step> {
  return new Map(steps.map((s) => [s.nodeId, s]));
}

/** Turns finished commands and node status into step transitions. Runs in every rollout state. */
function advanceSteps(input: SequencerInput, out: Action[]): Map<string, StepState> {
  const { rollout, fleet, now } = input;
  const states = new Map<string, StepState>();
  for (const step of input.steps) {
    states.set(step.nodeId, step.state);
    const cmd = step.commandId ? input.commands.get(step.commandId) : undefined;
    const set = (to: StepState, extra: Omit<Extract<Action, { kind: 'step' }>, 'kind' | 'nodeId' | 'to'> = {}) => {
      out.push({ kind: 'step', nodeId: step.nodeId, to, ...extra });
      states.set(step.nodeId, to);
    };
    const done = cmd && (cmd.state === 'completed' || cmd.state === 'rejected');
    const ok = cmd && cmd.state === 'completed' && cmd.outcome === 'succeeded';
    switch (step.state) {
      case 'preparing':
        if (!done) break;
        if (ok) set('prepared');
        else set('failed', { code: cmd!.code ?? 'E_NODE_FAILED', message: cmd!.message, patch: { finishedAt: now } });
        break;
      case 'upgrading':
        if (!done) break;
        if (ok || (cmd!.state === 'rejected' && cmd!.code === 'E_SAME_VERSION')) {
          set('verifying', { patch: { resultAt: now, downtimeMs: cmd!.downtimeMs } });
        } else {
          set('failed', { code: cmd!.code ?? 'E_NODE_FAILED', message: cmd!.message, patch: { finishedAt: now, downtimeMs: cmd!.downtimeMs } });
          out.push({
            kind: 'event',
            type: 'node.failed',
            nodeId: step.nodeId,
            data: { code: cmd!.code, outcome: cmd!.outcome, runningVersion: cmd!.runningVersion, message: cmd!.message },
          });
        }
        break;
      case 'verifying':
        if (isSynced(fleet.nodes.get(step.nodeId), rollout.target.version, fleet, rollout.options.syncDistance)) {
          set('upgraded', { patch: { syncedAt: now, finishedAt: now } });
          out.push({ kind: 'event', type: 'node.upgraded', nodeId: step.nodeId, data: { version: rollout.target.version, downtimeMs: step.downtimeMs } });
        } else if (step.resultAt != null && now - step.resultAt > rollout.options.syncTimeoutMs) {
          set('failed', { code: 'E_SYNC_TIMEOUT', message: 'the node did not report synced in time', patch: { finishedAt: now } });
          out.push({ kind: 'event', type: 'node.failed', nodeId: step.nodeId, data: { code: 'E_SYNC_TIMEOUT' } });
        }
        break;
      case 'rolling_back':
        if (!done) break;
        if (ok || (cmd!.state === 'rejected' && cmd!.code === 'E_NOTHING_TO_ROLLBACK' && fleet.nodes.get(step.nodeId)?.version === step.fromVersion)) {
          set('rolled_back', { patch: { finishedAt: now } });
          out.push({ kind: 'event', type: 'node.rolled_back', nodeId: step.nodeId, data: { runningVersion: cmd!.runningVersion } });
        } else {
          set('failed', { code: cmd!.code ?? 'E_ROLLBACK_FAILED', message: cmd!.message, patch: { finishedAt: now } });
          out.push({ kind: 'event', type: 'node.rollback_failed', nodeId: step.nodeId, data: { code: cmd!.code } });
        }
        break;
      default:
        break;
    }
  }
  return states;
}

/** Gate before a rollout may run: approval, then the window. */
function gate(input: SequencerInput): RolloutState {
  const { rollout } = input;
  if (rollout.options.requireApproval && rollout.data.approvedAt == null) return 'awaiting_approval';
  if (rollout.options.window && !input.windowOpen) return 'scheduled';
  return 'running';
}

/**
 * Decides the next actions. Never dispatches more nodes than the disruption
 * budget allows, counting unhealthy nodes and everything in flight anywhere.
 */
export function decide(input: SequencerInput): Action[] {
  const out: Action[] = [];
  const { rollout, fleet, now } = input;
  const states = advanceSteps(input, out);
  const state = rollout.state;
  if (TERMINAL_ROLLOUT_STATES.includes(state) || state === 'paused') return out;

  const to = (next: RolloutState, code?: ErrorCode | null, reason?: string | null) => {
    out.push({ kind: 'rollout', to: next, code: code ?? null, reason: reason ?? null });
  };

  if (state === 'planned' || state === 'scheduled' || state === 'awaiting_approval') {
    const next = gate(input);
    if (next !== state) {
      to(next);
      if (next === 'running') out.push({ kind: 'event', type: 'rollout.started' });
    }
    return out;
  }

  const list = (pred: (s: StepState) => boolean) => input.steps.filter((s) => pred(states.get(s.nodeId)!));
  const handled = new Set(rollout.data.handledFailures ?? []);
  const newFailures = list((s) => s === 'failed').filter((s) => !handled.has(s.nodeId));
  let seq = rollout.data.dispatchSeq ?? 0;
  const limits = { ...DEFAULT_CANARY_LIMITS, ...(rollout.options.canaryLimits ?? {}) };
  // Step states as of this decision (advanceSteps may have moved some).
  const current = () => input.steps.map((s) => ({ ...s, state: states.get(s.nodeId)! }));

  const dispatch = (step: Step, command: CommandKind, options?: UpgradeOptions) => {
    const attempt = step.attempt + 1;
    const commandId = commandIdFor(rollout.id, step.nodeId, command, attempt);
    const target: StepState = command === 'prepare' ? 'preparing' : command === 'upgrade' ? 'upgrading' : 'rolling_back';
    const node = fleet.nodes.get(step.nodeId);
    seq++;
    out.push({
      kind: 'step',
      nodeId: step.nodeId,
      to: target,
      patch: {
        startedAt: now,
        ...(command === 'upgrade' ? { dispatchSeq: seq } : {}),
        ...(command !== 'rollback' ? { fromVersion: node?.version ?? step.fromVersion } : {}),
      },
    });
    out.push({ kind: 'send', nodeId: step.nodeId, command, commandId, ...(options ? { options } : {}) });
    out.push({ kind: 'event', type: 'node.dispatched', nodeId: step.nodeId, data: { command, commandId, leader: fleet.leader, maxHeight: fleet.maxHeight } });
    if (command === 'upgrade' && rollout.strategy === 'canary' && step.nodeId === rollout.options.canary && !rollout.data.soakPassed) {
      out.push({ kind: 'data', data: { canaryBaseline: baselineOf(node?.metrics, limits.minRequests) } });
    }
    states.set(step.nodeId, target);
  };
  const upgradeOptions = (extra: UpgradeOptions = {}): UpgradeOptions => ({
    ...(rollout.options.allowDowngrade ? { allowDowngrade: true } : {}),
    ...(fleet.maxHeight != null ? { referenceHeight: fleet.maxHeight } : {}),
    syncDistance: rollout.options.syncDistance,
    ...extra,
  });
  const finishSeq = () => {
    if (seq !== (rollout.data.dispatchSeq ?? 0)) out.push({ kind: 'data', data: { dispatchSeq: seq } });
  };

  // ------------------------------------------------------------ rolling back
  if (state === 'rolling_back') {
    const { budget } = disruption({ fleet, steps: current(), busyElsewhere: input.busyElsewhere });
    const inFlightOwn = list((s) => IN_FLIGHT_STEP_STATES.includes(s) && s !== 'verifying').length;
    // Undo in the reverse order of the upgrade.
    const todo = list((s) => s === 'upgraded' || s === 'verifying').sort((a, b) => (b.dispatchSeq ?? 0) - (a.dispatchSeq ?? 0));
    let slots = Math.min(Math.max(1, rollout.options.maxUnavailable) - inFlightOwn, budget + todo.filter((s) => states.get(s.nodeId) === 'verifying').length);
    if (rollout.strategy === 'halt') slots = todo.length; // the network was stopped together; undo together
    for (const step of todo) {
      if (slots <= 0) break;
      const node = fleet.nodes.get(step.nodeId);
      if (!node?.connected || node.busy) continue;
      dispatch(step, 'rollback');
      slots--;
    }
    finishSeq();
    if (list((s) => s === 'upgrading' || s === 'rolling_back' || s === 'upgraded' || s === 'verifying').length === 0) {
      const failedRollback = list((s) => s === 'failed').some((s) => s.code === 'E_ROLLBACK_FAILED' || s.code === 'E_RESTORE');
      if (failedRollback) to('failed', 'E_ROLLBACK_FAILED', 'a node could not be rolled back');
      else to('rolled_back', rollout.code, rollout.reason);
    }
    return out;
  }

  // ------------------------------------------------------------ failures
  if (newFailures.length > 0 && (state === 'running' || state === 'soaking')) {
    out.push({ kind: 'data', data: { handledFailures: [...handled, ...newFailures.map((s) => s.nodeId)] } });
    // The agent's code goes into the reason: it is what the operator searches for.
    // A step failed in this very decision still carries its old code; its command has the agent's.
    const codeOf = (s: Step) => s.code ?? (s.commandId ? input.commands.get(s.commandId)?.code : null) ?? null;
    const names = newFailures.map((s) => (codeOf(s) ? `${s.nodeId} (${codeOf(s)})` : s.nodeId)).join(', ');
    const isCanary = rollout.strategy === 'canary' && newFailures.some((s) => s.nodeId === rollout.options.canary) && !rollout.data.soakPassed;
    if (rollout.strategy === 'halt' && list((s) => s === 'preparing' || s === 'prepared' || s === 'pending').length > 0 && rollout.data.haltSentAt == null) {
      // Nothing was stopped yet: a failed prepare ends the rollout before any downtime.
      to('failed', 'E_NODE_FAILED', `prepare failed on ${names}`);
      out.push({ kind: 'event', type: 'rollout.failed', data: { nodes: newFailures.map((s) => s.nodeId) } });
    } else if (isCanary) {
      // The agent already rolled the canary back; nothing else was touched.
      to('failed', 'E_CANARY_FAILED', `canary ${names} failed its upgrade and was rolled back by its agent`);
      out.push({ kind: 'event', type: 'rollout.failed', data: { nodes: newFailures.map((s) => s.nodeId), code: 'E_CANARY_FAILED' } });
    } else if (rollout.options.autoRollback) {
      to('rolling_back', 'E_NODE_FAILED', `${names} failed; rolling back the upgraded nodes`);
      out.push({ kind: 'event', type: 'rollout.rolling_back', data: { nodes: newFailures.map((s) => s.nodeId) } });
    } else {
      to('paused', 'E_NODE_FAILED', `${names} failed (rolled back by its agent); the operator decides`);
      out.push({ kind: 'event', type: 'rollout.paused', data: { nodes: newFailures.map((s) => s.nodeId), code: 'E_NODE_FAILED' } });
    }
    return out;
  }

  // ------------------------------------------------------------ canary soak
  if (state === 'soaking') {
    const canary = rollout.options.canary!;
    const node = fleet.nodes.get(canary);
    const startedAt = rollout.data.soakStartedAt ?? now;
    const fail = (why: string) => {
      to('rolling_back', 'E_CANARY_FAILED', `canary ${canary} failed its soak: ${why}`);
      out.push({ kind: 'event', type: 'rollout.rolling_back', nodeId: canary, data: { code: 'E_CANARY_FAILED', why } });
    };
    if (!node?.connected) {
      // a lost connection alone is not proof of failure; the soak waits
      return out;
    }
    if (!node.healthy) return (fail('the node is not healthy'), out);
    if (node.version !== rollout.target.version) return (fail(`it runs ${node.version ?? 'nothing'}`), out);
    if (!isSynced(node, rollout.target.version, fleet, rollout.options.syncDistance)) return (fail('it fell behind the fleet'), out);
    if (now - startedAt >= rollout.options.soakMs) {
      const startHeight = rollout.data.soakStartHeight;
      if (startHeight != null && node.finalizedHeight != null && node.finalizedHeight <= startHeight) {
        return (fail('no block was finalized during the soak'), out);
      }
      const soakMetrics = rollout.data.soakMetrics ?? {};
      const verdict = judgeCanary({
        canary: { start: soakMetrics[canary] ?? null, now: node.metrics },
        reference: referenceNodes(input, states).map((r) => ({ nodeId: r.id, start: soakMetrics[r.id] ?? null, now: r.metrics })),
        baseline: rollout.data.canaryBaseline ?? null,
        limits,
      });
      if (!verdict.ok) return (fail(`metrics: ${verdict.detail}`), out);
      out.push({ kind: 'data', data: { soakPassed: true, lastStableAt: now } });
      out.push({ kind: 'event', type: 'canary.passed', nodeId: canary, data: { metrics: verdict } });
      to('running');
    }
    return out;
  }

  // state === 'running'
  if (rollout.strategy === 'halt') return decideHalt(input, states, out, dispatch, upgradeOptions, finishSeq, to);

  // ------------------------------------------------------------ rolling / canary
  const inFlightOwn = list((s) => s === 'upgrading' || s === 'verifying');
  if (inFlightOwn.length > 0) return out; // wait for the wave to be synced
  const pending = list((s) => s === 'pending');
  const justSynced = input.steps.reduce((m, s) => Math.max(m, s.state === 'verifying' && states.get(s.nodeId) === 'upgraded' ? now : s.syncedAt ?? 0), 0);
  const lastStable = Math.max(rollout.data.lastStableAt ?? 0, justSynced);

  if (rollout.strategy === 'canary' && !rollout.data.soakPassed) {
    const canary = input.steps.find((s) => s.nodeId === rollout.options.canary);
    if (canary && states.get(canary.nodeId) === 'upgraded') {
      const soakMetrics: Record<string, Counters> = {};
      for (const n of [fleet.nodes.get(canary.nodeId), ...referenceNodes(input, states)]) {
        if (n?.metrics) soakMetrics[n.id] = { requestsTotal: n.metrics.requestsTotal, errorsTotal: n.metrics.errorsTotal };
      }
      out.push({ kind: 'data', data: { soakStartedAt: now, soakStartHeight: fleet.nodes.get(canary.nodeId)?.finalizedHeight ?? null, soakMetrics } });
      out.push({ kind: 'event', type: 'canary.soaking', nodeId: canary.nodeId, data: { soakMs: rollout.options.soakMs } });
      to('soaking');
      return out;
    }
  }

  if (pending.length === 0) {
    const failed = list((s) => s === 'failed');
    if (failed.length > 0) {
      to('failed', 'E_NODE_FAILED', `finished with ${failed.length} failed node(s): ${failed.map((s) => s.nodeId).join(', ')}`);
      out.push({ kind: 'event', type: 'rollout.failed', data: { nodes: failed.map((s) => s.nodeId) } });
    } else {
      to('completed');
      out.push({ kind: 'event', type: 'rollout.completed' });
    }
    return out;
  }
  if (lastStable > 0 && now - lastStable < rollout.options.stabilizationMs) return out;

  // Nodes already on the target need no command.
  for (const step of pending) {
    const node = fleet.nodes.get(step.nodeId);
    if (node?.version === rollout.target.version && node.healthy && !node.busy) {
      out.push({ kind: 'step', nodeId: step.nodeId, to: 'skipped', message: 'already at the target version', patch: { finishedAt: now } });
      states.set(step.nodeId, 'skipped');
    }
  }
  let candidates = pending.filter((s) => states.get(s.nodeId) === 'pending');
  if (candidates.length === 0) return out;
  if (rollout.strategy === 'canary' && !rollout.data.soakPassed) {
    candidates = candidates.filter((s) => s.nodeId === rollout.options.canary);
  }

  const { budget } = disruption({ fleet, steps: current(), busyElsewhere: input.busyElsewhere });
  let slots = Math.min(budget, rollout.options.maxUnavailable);
  if (slots <= 0) return out;
  // The leader goes last. Leadership rotates, so this is re-evaluated on every tick, right before dispatch.
  const leader = fleet.leader;
  const nonLeaders = candidates.filter((s) => s.nodeId !== leader);
  const ordered = nonLeaders.length > 0 ? nonLeaders : candidates;
  if (nonLeaders.length === 0 && candidates.length > 1) return out;
  for (const step of ordered.sort((a, b) => a.position - b.position)) {
    if (slots <= 0) break;
    const node = fleet.nodes.get(step.nodeId);
    if (!node?.connected || !node.healthy || node.busy || input.busyElsewhere.has(step.nodeId)) continue;
    dispatch(step, 'upgrade', upgradeOptions());
    slots--;
  }
  finishSeq();
  return out;
}

function decideHalt(
  input: SequencerInput,
  states: Map<string, StepState>,
  out: Action[],
  dispatch: (step: Step, command: CommandKind, options?: UpgradeOptions) => void,
  upgradeOptions: (extra?: UpgradeOptions) => UpgradeOptions,
  finishSeq: () => void,
  to: (next: RolloutState, code?: ErrorCode | null, reason?: string | null) => void,
): Action[] {
  const { rollout, fleet, now } = input;
  const count = (s: StepState) => input.steps.filter((x) => states.get(x.nodeId) === s).length;
  const all = input.steps.length;
  // Phase 1: stage the artifact everywhere while the network keeps running.
  if (rollout.data.haltSentAt == null) {
    for (const step of input.steps) {
      if (states.get(step.nodeId) === 'pending') dispatch(step, 'prepare', upgradeOptions({ approvedMajor: rollout.pathKind === 'major' }));
    }
    if (count('prepared') < all) return (finishSeq(), out);
    // Phase 2: everything is staged; stop the world only inside the window, with approval.
    if (rollout.options.window && !input.windowOpen) {
      to('paused', 'E_WINDOW_CLOSED', 'the maintenance window closed before the halt could start');
      return out;
    }
    if (rollout.options.requireApproval && rollout.data.approvedAt == null) {
      to('awaiting_approval', 'E_NOT_APPROVED', 'the halt upgrade needs approval');
      return out;
    }
    for (const step of input.steps) {
      dispatch(step, 'upgrade', upgradeOptions({ requireStaged: true, approvedMajor: rollout.pathKind === 'major' }));
    }
    out.push({ kind: 'data', data: { haltSentAt: now, haltHeight: fleet.maxHeight } });
    out.push({ kind: 'event', type: 'halt.started', data: { height: fleet.maxHeight } });
    finishSeq();
    return out;
  }
  // Phase 3: wait until every node is back and the chain finalizes past the halt height.
  if (count('upgrading') + count('verifying') > 0) return out;
  if (count('failed') > 0) {
    to('failed', 'E_NODE_FAILED', 'some nodes failed the halt upgrade');
    return out;
  }
  const haltHeight = rollout.data.haltHeight ?? -1;
  if (fleet.maxHeight != null && fleet.maxHeight > haltHeight) {
    out.push({ kind: 'event', type: 'halt.finalizing', data: { height: fleet.maxHeight } });
    out.push({ kind: 'event', type: 'rollout.completed' });
    to('completed');
  } else if (now - rollout.data.haltSentAt > rollout.options.haltTimeoutMs) {
    to('paused', 'E_CHAIN_STALL', 'the chain did not finalize after the halt upgrade');
    out.push({ kind: 'event', type: 'rollout.paused', data: { code: 'E_CHAIN_STALL' } });
  }
  return out;
}
