/**
 * The rollout loop: on every tick it feeds the persisted state of each rollout
 * that has something to do to the pure sequencer and applies the actions it
 * returns, in one transaction per rollout, before anything goes on the wire.
 * It reaches the outside only through LoopEffects (clock, timers, agent
 * transport) and the store, so a test runs it on a real SQLite file with a
 * counting transport, and a simulation can drive it with a virtual clock.
 */
import type { Logger } from 'pino';
import { commandDigest, coordinatorMessage, encode, failureEvidence, type Command } from '@guts-upgrade/protocol';
import type { Store } from '../db.js';
import type { FleetView, Rollout, Step } from '../model.js';
import { decide, type Action } from '../sequencer.js';
import { ACTIVE_ROLLOUT_STATES, IN_FLIGHT_STEP_STATES, assertRolloutTransition, assertStepTransition, commandStatesInto } from '../states.js';
import { windowAllows, type WindowSpec } from '../windows.js';
import type { Audit } from './audit.js';
import type { ChainTracker } from './chain-view.js';
import type { Cancel, LoopEffects } from './effects.js';
import { fleetView, type FleetSettings } from './fleet-view.js';
import type { WriteQueue } from './write-queue.js';

/** The events that say a node failed: each carries the failed step's evidence. */
const EVIDENCE_EVENTS = new Set(['node.failed', 'node.rollback_failed']);

export interface LoopSettings {
  tickMs: number;
  fleet: FleetSettings;
  windows: readonly WindowSpec[];
}

export interface RolloutLoopDeps {
  store: Store;
  writes: WriteQueue;
  audit: Audit;
  log: Logger;
  effects: LoopEffects;
  settings: LoopSettings;
  /** The chain as the agents report it; absent: the fleet is counted by nodes. */
  chain?: ChainTracker;
  /** Tells listeners a rollout changed. */
  notify?: (rolloutId: string) => void;
}

/** A command row committed in this tick, to put on the wire once the transaction is done. */
interface Outgoing {
  id: string;
  nodeId: string;
  body: string;
}

export class RolloutLoop {
  private cancelTimer: Cancel | null = null;
  private ticking = false;
  private tickAgain = false;
  private tickScheduled = false;
  private stopped = false;

  constructor(private readonly d: RolloutLoopDeps) {}

  start(): void {
    this.cancelTimer = this.d.effects.timers.every(this.d.settings.tickMs, () => this.tick());
    this.tick();
  }

  stop(): void {
    this.stopped = true;
    this.cancelTimer?.();
    this.cancelTimer = null;
  }

  /** The fleet as the agents report it now. */
  fleetView(now = this.d.effects.now()): FleetView {
    return fleetView(this.d.store.activeNodes(), this.d.effects.agents.live(), this.d.settings.fleet, now, this.d.chain);
  }

  /**
   * Asks for a tick once the current event-loop turn is done: every agent message read in this
   * turn is handled first, then one tick decides on all of them (instead of a full tick per
   * message, which made a wave O(wave²)).
   */
  scheduleTick(): void {
    if (this.tickScheduled || this.stopped) return;
    this.tickScheduled = true;
    this.d.effects.timers.soon(() => {
      this.tickScheduled = false;
      this.tick();
    });
  }

  /**
   * Runs the sequencer for every rollout that has something to do. Re-entrant calls coalesce.
   * Queued writes are committed first, so every decision is made on durable state, and the
   * queued 'sent' marks of the commands sent are committed at the end, in one transaction.
   */
  tick(): void {
    if (this.stopped) return;
    if (this.ticking) {
      this.tickAgain = true;
      return;
    }
    this.ticking = true;
    try {
      do {
        this.tickAgain = false;
        this.d.writes.flush();
        this.redeliverOpen();
        this.tickOnce();
      } while (this.tickAgain && !this.stopped);
      this.d.writes.flush();
    } finally {
      this.ticking = false;
    }
  }

  /** Re-sends, with the same ids, the open commands of the nodes that (re)connected; runs after the queued writes are committed. */
  private redeliverOpen(): void {
    for (const id of this.d.effects.agents.reconnected()) {
      for (const c of this.d.store.openCommands(id)) this.deliver({ id: c.id, nodeId: c.nodeId, body: c.body });
    }
  }

  /**
   * Sends a command whose row is already committed. The 'sent' mark is informational ('pending'
   * and 'sent' are both open: re-sent with the same id on reconnect, counted in flight), so it
   * is queued and committed once for all the sends of a tick, right after them.
   */
  private deliver(c: Outgoing): void {
    if (!this.d.effects.agents.send(c.nodeId, c.body)) return;
    const at = this.d.effects.now();
    this.d.writes.queue(() => this.d.store.advanceCommandState(c.id, 'sent', commandStatesInto('sent'), at), false);
  }

  /** The rollouts with something to do: active ones, and finished ones still waiting on a node in flight. */
  private rolloutsToDecide(): Set<string> {
    const active = this.d.store.rolloutsInStates(ACTIVE_ROLLOUT_STATES);
    return new Set([...active.map((r) => r.id), ...this.d.store.rolloutsWithStepsIn(IN_FLIGHT_STEP_STATES)]);
  }

  /** Nodes down because of something other than rollout `id`: another rollout's open command or in-flight step. */
  private busyElsewhere(id: string, ids: Set<string>, open: ReturnType<Store['openCommands']>): Set<string> {
    const busy = new Set<string>();
    for (const c of open) if (c.rolloutId !== id && c.kind !== 'prepare') busy.add(c.nodeId);
    for (const other of ids) {
      if (other === id) continue;
      for (const s of this.d.store.steps(other)) if (IN_FLIGHT_STEP_STATES.includes(s.state)) busy.add(s.nodeId);
    }
    return busy;
  }

  private tickOnce(): void {
    const now = this.d.effects.now();
    // Wall time of this tick's phases, for the dispatch log line only (decisions use `now`).
    const started = performance.now();
    const ids = this.rolloutsToDecide();
    // Nothing to decide (the fleet's usual state): no fleet view of every node twice a second.
    if (ids.size === 0) return;
    const fleet = this.fleetView(now);
    const open = this.d.store.openCommands();
    for (const id of ids) {
      const rollout = this.d.store.rollout(id);
      if (!rollout) continue;
      const steps = this.d.store.steps(id);
      let actions: Action[];
      try {
        actions = decide({
          rollout,
          steps,
          commands: this.d.store.commandsFor(id),
          fleet,
          busyElsewhere: this.busyElsewhere(id, ids, open),
          windowOpen: windowAllows(rollout.options.window, this.d.settings.windows, now),
          now,
        });
      } catch (err) {
        this.d.log.error({ err, rolloutId: id }, 'sequencer failed');
        continue;
      }
      if (actions.length === 0) continue;
      const outgoing: Outgoing[] = [];
      const decided = performance.now();
      try {
        this.d.writes.tx(() => this.apply(rollout, steps, actions, outgoing, now));
      } catch (err) {
        this.d.log.error({ err, rolloutId: id, actions }, 'applying sequencer actions failed; nothing changed');
        continue;
      }
      const committed = performance.now();
      for (const c of outgoing) this.deliver(c);
      if (outgoing.length > 0) this.logDispatch(id, outgoing.length, started, decided, committed);
      this.d.notify?.(id);
      this.tickAgain = true;
    }
  }

  /**
   * Where the time from decision to the wire went, once per tick that sent commands: reading and
   * deciding, committing the rows (one fsync), handing the frames to the sockets. At a wave of
   * hundreds of nodes this is the coordinator's share of the dispatch latency.
   */
  private logDispatch(rolloutId: string, commands: number, started: number, decided: number, committed: number): void {
    const ms = (a: number, b: number) => Math.round((b - a) * 10) / 10;
    const sent = performance.now();
    this.d.log.info(
      { rolloutId, commands, decideMs: ms(started, decided), commitMs: ms(decided, committed), sendMs: ms(committed, sent) },
      'commands dispatched',
    );
  }

  /** Writes the sequencer's actions; runs inside one transaction, so a throw changes nothing. */
  private apply(rollout: Rollout, steps: Step[], actions: Action[], outgoing: Outgoing[], now: number): void {
    const { store, audit, log } = this.d;
    const stepState = new Map(steps.map((s) => [s.nodeId, s] as const));
    // A node's step changes (its new state, then the command sent to it) are written as one
    // UPDATE at the end: at a wave of hundreds of nodes, half the step writes of the commit.
    const stepWrites = new Map<string, Partial<Step>>();
    const writeStep = (nodeId: string, patch: Partial<Step>) => stepWrites.set(nodeId, { ...stepWrites.get(nodeId), ...patch });
    let state = rollout.state;
    for (const a of actions) {
      switch (a.kind) {
        case 'rollout':
          assertRolloutTransition(state, a.to);
          store.setRolloutState(rollout.id, a.to, a.code ?? null, a.reason ?? null, now);
          audit.record('rollout.state', 'coordinator', rollout.id, null, { from: state, to: a.to, code: a.code, reason: a.reason });
          if (a.to === 'rolled_back') audit.record('rollout.rolled_back', 'coordinator', rollout.id, null, { code: a.code });
          log.info({ rolloutId: rollout.id, from: state, to: a.to, code: a.code, reason: a.reason }, 'rollout state');
          state = a.to;
          break;
        case 'data':
          store.patchRolloutData(rollout.id, a.data, now);
          break;
        case 'step': {
          const s = stepState.get(a.nodeId);
          if (!s) throw new Error(`no step for ${a.nodeId}`);
          assertStepTransition(s.state, a.to);
          // A failure keeps its evidence on the step: later commands (an auto-rollback) replace the step's command.
          const evidence = a.to === 'failed' && s.commandId ? failureEvidence(store.commandResult(s.commandId)) : null;
          writeStep(a.nodeId, {
            state: a.to,
            ...(a.code !== undefined ? { code: a.code } : {}),
            ...(a.message !== undefined ? { message: a.message } : {}),
            ...(a.patch ?? {}),
            ...(evidence ? { evidence } : {}),
          });
          stepState.set(a.nodeId, { ...s, state: a.to, ...(evidence ? { evidence } : {}) });
          break;
        }
        case 'send': {
          const s = stepState.get(a.nodeId)!;
          // The attempt as read before this apply (step actions above change only the state).
          const attempt = s.attempt + 1;
          const base = { id: a.commandId, rolloutId: rollout.id, issuedAt: new Date(now).toISOString() };
          const cmd: Command =
            a.command === 'rollback'
              ? coordinatorMessage('command', { ...base, kind: 'rollback', ...(s.fromVersion ? { toVersion: s.fromVersion } : {}) })
              : coordinatorMessage('command', { ...base, kind: a.command, target: rollout.target, ...(a.options ? { options: a.options } : {}) });
          const body = encode(cmd);
          store.insertCommand({
            id: a.commandId,
            nodeId: a.nodeId,
            rolloutId: rollout.id,
            kind: a.command,
            digest: commandDigest(cmd),
            body,
            state: 'pending',
            createdAt: now,
            updatedAt: now,
          });
          writeStep(a.nodeId, { commandId: a.commandId, attempt, progress: null });
          audit.record('command.sent', 'coordinator', rollout.id, a.nodeId, { commandId: a.commandId, kind: a.command, options: a.options });
          outgoing.push({ id: a.commandId, nodeId: a.nodeId, body });
          break;
        }
        case 'event': {
          // A node's failure travels with its evidence (the API, the CLI and webhooks read it here).
          const evidence = EVIDENCE_EVENTS.has(a.type) && a.nodeId ? stepState.get(a.nodeId)?.evidence : null;
          audit.record(a.type, 'coordinator', rollout.id, a.nodeId ?? null, { ...(a.data ?? {}), ...(evidence ? { evidence } : {}) });
          break;
        }
      }
    }
    // The same final row as one UPDATE per change in order: a later change's columns win.
    for (const [nodeId, patch] of stepWrites) store.updateStep(rollout.id, nodeId, patch, now);
  }
}
