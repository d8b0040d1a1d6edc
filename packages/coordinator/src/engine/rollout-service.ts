/**
 * The rollout service: what operators ask of rollouts. It plans and creates
 * them (with the configured defaults filled in), shows them, and applies the
 * operator actions (pause, resume, abort, rollback, approve) through the
 * rollout state table. The rollout loop then carries them out.
 */
import { randomBytes } from 'node:crypto';
import { CodedError, type ErrorCode } from '@guts-upgrade/protocol';
import type { CanaryLimits } from '../canary.js';
import type { Config } from '../config.js';
import type { EventRow, Store } from '../db.js';
import type { FleetView, Rollout, RolloutOptions, Strategy } from '../model.js';
import { planRollout, type Plan, type RolloutRequest } from '../planner.js';
import {
  ACTIONS,
  ACTIVE_ROLLOUT_STATES,
  IN_FLIGHT_STEP_STATES,
  ROLLOUT_STATES,
  assertRolloutTransition,
  type OperatorAction,
  type RolloutState,
} from '../states.js';
import { missingHalf, unpairedReason, type RolloutTarget } from '../target.js';
import { windowAllows } from '../windows.js';
import type { Audit } from './audit.js';
import type { WriteQueue } from './write-queue.js';

export interface RolloutInput {
  target: RolloutTarget;
  strategy?: Strategy;
  nodes?: string[];
  options?: Partial<Omit<RolloutOptions, 'canaryLimits'>> & { canaryLimits?: Partial<CanaryLimits> };
}

export interface RolloutServiceDeps {
  store: Store;
  writes: WriteQueue;
  audit: Audit;
  config: Pick<Config, 'defaults' | 'windows'>;
  fleet: () => FleetView;
  now: () => number;
  /** Runs the rollout loop now, so a created or changed rollout moves at once. */
  tick: () => void;
}

export class RolloutService {
  constructor(private readonly d: RolloutServiceDeps) {}

  /** The request with every option the operator left out taken from the configured defaults. */
  private request(input: RolloutInput): RolloutRequest {
    const d = this.d.config.defaults;
    const o = input.options ?? {};
    const strategy = input.strategy ?? 'rolling';
    return {
      target: targetOf(input.target),
      strategy,
      ...(input.nodes ? { nodes: input.nodes } : {}),
      options: {
        maxUnavailable: o.maxUnavailable ?? d.maxUnavailable,
        stabilizationMs: o.stabilizationMs ?? d.stabilizationMs,
        soakMs: o.soakMs ?? d.soakMs,
        syncDistance: o.syncDistance ?? d.syncDistance,
        syncTimeoutMs: o.syncTimeoutMs ?? d.syncTimeoutMs,
        haltTimeoutMs: o.haltTimeoutMs ?? d.haltTimeoutMs,
        autoRollback: o.autoRollback ?? false,
        allowDowngrade: o.allowDowngrade ?? false,
        canary: o.canary ?? null,
        window: o.window ?? null,
        requireApproval: o.requireApproval ?? false,
        requireJudgedSoak: o.requireJudgedSoak ?? false,
        canaryLimits: { ...d.canaryLimits, ...(o.canaryLimits ?? {}) },
      },
    };
  }

  plan(input: RolloutInput): Plan {
    return planRollout(this.request(input), this.d.fleet(), this.d.config.windows, this.d.now());
  }

  create(input: RolloutInput, actor: string): Rollout {
    const { store, audit } = this.d;
    const req = this.request(input);
    const plan = planRollout(req, this.d.fleet(), this.d.config.windows, this.d.now());
    const now = this.d.now();
    const id = `r${now.toString(36)}${randomBytes(3).toString('hex')}`;
    const rollout: Rollout = {
      id,
      strategy: req.strategy,
      target: req.target,
      fromVersion: plan.fromVersion,
      pathKind: plan.path?.kind ?? 'patch',
      options: { ...req.options, maxUnavailable: plan.maxUnavailable, canary: plan.canary, requireApproval: plan.requiresApproval },
      state: 'planned',
      code: null,
      reason: null,
      nodes: plan.nodes,
      waves: plan.waves,
      data: {},
      createdBy: actor,
      createdAt: now,
      updatedAt: now,
      stateSince: now,
    };
    // Check and insert in one transaction: two concurrent requests cannot both win.
    this.d.writes.tx(() => {
      const held = store.nodesInActiveRollouts(ACTIVE_ROLLOUT_STATES);
      const overlap = plan.nodes.filter((n) => held.has(n));
      if (overlap.length > 0) {
        throw new CodedError('E_CONFLICT', `nodes ${overlap.join(', ')} are in active rollout ${held.get(overlap[0]!)}`, { rolloutId: held.get(overlap[0]!) });
      }
      store.insertRollout(rollout);
      const inWaves = new Set(plan.waves.flat());
      const skip = new Set(plan.skip);
      const order = [...inWaves, ...plan.skip, ...plan.nodes.filter((n) => !inWaves.has(n) && !skip.has(n))];
      order.forEach((nodeId, position) => {
        store.insertStep({
          rolloutId: id,
          nodeId,
          position,
          state: 'pending',
          commandId: null,
          attempt: 0,
          fromVersion: null,
          code: null,
          message: null,
          downtimeMs: null,
          dispatchSeq: null,
          startedAt: null,
          resultAt: null,
          syncedAt: null,
          finishedAt: null,
          updatedAt: now,
          progress: null,
        });
        if (skip.has(nodeId)) store.updateStep(id, nodeId, { state: 'skipped', message: 'already at the target version', finishedAt: now }, now);
      });
      audit.record('rollout.created', actor, id, null, { strategy: rollout.strategy, target: rollout.target, waves: plan.waves, options: rollout.options });
    });
    this.d.tick();
    return store.rollout(id)!;
  }

  private get(id: string): Rollout {
    const r = this.d.store.rollout(id);
    if (!r) throw new CodedError('E_NOT_FOUND', `no rollout ${id}`);
    return r;
  }

  detail(id: string) {
    const r = this.get(id);
    const fleet = this.d.fleet();
    // In-flight steps carry the agent link, so a lost agent never hides behind "upgrading".
    const steps = this.d.store
      .steps(id)
      .map((s) => (IN_FLIGHT_STEP_STATES.includes(s.state) ? { ...s, agent: fleet.nodes.get(s.nodeId)?.agent ?? 'unreachable' } : s));
    return { rollout: r, steps };
  }

  list(limit = 100): Rollout[] {
    return this.d.store.rollouts(limit);
  }

  /** The audit events of one rollout, after a sequence number. */
  events(id: string, after = 0, limit = 1000): EventRow[] {
    this.get(id);
    return this.d.store.events({ rolloutId: id, after, limit });
  }

  /** How many rollouts are in each state, every state listed. */
  countByState(): Record<RolloutState, number> {
    const counts = this.d.store.rolloutCountsByState();
    return Object.fromEntries(ROLLOUT_STATES.map((s) => [s, counts.get(s) ?? 0])) as Record<RolloutState, number>;
  }

  /** Applies an operator action; throws E_INVALID_STATE (nothing changed) when invalid now. */
  action(id: string, action: OperatorAction, actor: string, reason: string | null): Rollout {
    const r = this.get(id);
    const valid = ACTIONS[action] as readonly RolloutState[];
    if (!valid.includes(r.state)) {
      throw new CodedError('E_INVALID_STATE', `cannot ${action} a rollout that is ${r.state} (valid in: ${valid.join(', ')})`, { state: r.state });
    }
    const now = this.d.now();
    this.d.writes.tx(() => OPERATOR_ACTIONS[action]({ r, actor, reason, now, move: this.mover(r, actor, reason, now), d: this.d }));
    this.d.tick();
    return this.d.store.rollout(id)!;
  }

  private mover(r: Rollout, actor: string, reason: string | null, now: number): Move {
    return (to, code = null, why = reason) => {
      assertRolloutTransition(r.state, to);
      this.d.store.setRolloutState(r.id, to, code, why, now);
      this.d.audit.record('rollout.state', actor, r.id, null, { from: r.state, to, code, reason: why });
    };
  }
}

/**
 * The target as stored and sent: only the fields given, so a bare version reaches the agents as
 * one (they resolve it through their signed release repository) and is stored without url or sha256.
 */
function targetOf(t: RolloutTarget): RolloutTarget {
  const missing = missingHalf(t);
  if (missing) {
    throw new CodedError('E_BAD_MESSAGE', unpairedReason(missing, { url: 'target.url', sha256: 'target.sha256' }, t.version), {
      field: `target.${missing}`,
      reason: `is required with target.${missing === 'url' ? 'sha256' : 'url'}`,
    });
  }
  return {
    version: t.version,
    ...(t.url !== undefined && t.sha256 !== undefined ? { url: t.url, sha256: t.sha256 } : {}),
    ...(t.signature ? { signature: t.signature } : {}),
    // Protocol 1.4: agents stop the download at this many bytes; older agents ignore it.
    ...(t.length !== undefined ? { length: t.length } : {}),
  };
}

type Move = (to: RolloutState, code?: ErrorCode | null, why?: string | null) => void;

interface ActionContext {
  r: Rollout;
  actor: string;
  reason: string | null;
  now: number;
  move: Move;
  d: RolloutServiceDeps;
}

/** What each operator action writes; each runs inside the action's transaction. */
const OPERATOR_ACTIONS: Record<OperatorAction, (c: ActionContext) => void> = {
  pause({ r, actor, reason, now, move, d }) {
    if (r.state === 'rolling_back') d.store.patchRolloutData(r.id, { pausedFrom: 'rolling_back' }, now);
    move('paused', null, reason ?? `paused by ${actor}`);
    d.audit.record('rollout.paused', actor, r.id, null, { reason });
  },
  resume({ r, actor, reason, now, move, d }) {
    const gateTo = resumeInto(r, d, now);
    // A resumed rollout does not stop again on failures the operator has seen.
    const failed = d.store
      .steps(r.id)
      .filter((s) => s.state === 'failed')
      .map((s) => s.nodeId);
    d.store.patchRolloutData(r.id, { handledFailures: [...new Set([...(r.data.handledFailures ?? []), ...failed])], pausedFrom: null }, now);
    move(gateTo);
    d.audit.record('rollout.resumed', actor, r.id, null, { reason, to: gateTo });
  },
  abort({ r, actor, reason, move, d }) {
    move('aborted', null, reason ?? `aborted by ${actor}`);
    d.audit.record('rollout.aborted', actor, r.id, null, { reason });
  },
  rollback({ r, actor, reason, move, d }) {
    move('rolling_back', r.code, reason ?? `rollback requested by ${actor}`);
    d.audit.record('rollout.rolling_back', actor, r.id, null, { reason });
  },
  approve({ r, actor, reason, now, d }) {
    if (r.data.approvedAt != null) throw new CodedError('E_INVALID_STATE', `rollout ${r.id} is already approved by ${r.data.approvedBy}`);
    d.store.patchRolloutData(r.id, { approvedAt: now, approvedBy: actor }, now);
    d.audit.record('rollout.approved', actor, r.id, null, { reason });
  },
};

/**
 * A paused rollback resumes rolling back. Otherwise a paused rollout resumes into its gate: awaiting approval when it needs one, scheduled when its
 * window is closed and nothing was dispatched yet (a halt already sent, or any node touched, keeps
 * it running), else running.
 */
function resumeInto(r: Rollout, d: RolloutServiceDeps, now: number): RolloutState {
  if (r.data.pausedFrom === 'rolling_back') return 'rolling_back';
  if (r.options.requireApproval && r.data.approvedAt == null) return 'awaiting_approval';
  const anyDispatched = d.store.steps(r.id).some((s) => s.dispatchSeq != null || s.state !== 'pending');
  if (r.options.window && !windowAllows(r.options.window, d.config.windows, now) && r.data.haltSentAt == null && !anyDispatched) return 'scheduled';
  return 'running';
}
