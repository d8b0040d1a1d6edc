import type { CommandRecord, FleetView, NodeView, Rollout, Step } from '../src/model.js';
import { decide, type Action } from '../src/sequencer.js';
import { assertRolloutTransition, assertStepTransition, IN_FLIGHT_STEP_STATES } from '../src/states.js';

export const SHA = 'a'.repeat(64);

/** A small seeded generator (mulberry32): the same sequence on every run, another per seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

export function node(id: string, extra: Partial<NodeView> = {}): NodeView {
  return {
    id,
    connected: true,
    healthy: true,
    version: '1.0.0',
    health: 'up',
    ready: true,
    isLeader: false,
    currentLeader: null,
    finalizedHeight: 100,
    view: 1,
    peerCount: 3,
    busy: null,
    lastSeenAt: 0,
    ...extra,
  };
}

export function fleetOf(n: number, leader = 0): FleetView {
  const nodes = new Map<string, NodeView>();
  for (let i = 0; i < n; i++) nodes.set(`v${i}`, node(`v${i}`, { isLeader: i === leader }));
  return { n, nodes, leader: `v${leader}`, maxHeight: 100 };
}

export function rolloutOf(ids: string[], extra: Partial<Rollout> = {}, opts: Partial<Rollout['options']> = {}): Rollout {
  return {
    id: 'r1',
    strategy: 'rolling',
    target: { version: '1.1.0', url: 'http://x/a.tgz', sha256: SHA },
    fromVersion: '1.0.0',
    pathKind: 'minor',
    options: {
      maxUnavailable: 1,
      stabilizationMs: 0,
      soakMs: 1000,
      syncDistance: 2,
      syncTimeoutMs: 60_000,
      haltTimeoutMs: 60_000,
      autoRollback: false,
      allowDowngrade: false,
      canary: null,
      window: null,
      requireApproval: false,
      ...opts,
    },
    state: 'running',
    code: null,
    reason: null,
    nodes: ids,
    waves: [],
    data: {},
    createdBy: 't',
    createdAt: 0,
    updatedAt: 0,
    stateSince: 0,
    ...extra,
  };
}

export function stepsOf(ids: string[]): Step[] {
  return ids.map((nodeId, position) => ({
    rolloutId: 'r1',
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
    updatedAt: 0,
    progress: null,
  }));
}

/**
 * A tiny in-memory world: applies sequencer actions like the engine does, and
 * lets a test play the agents (complete commands) and the chain (leader, heights).
 */
export class World {
  commands = new Map<string, CommandRecord>();
  sent: Extract<Action, { kind: 'send' }>[] = [];
  events: Extract<Action, { kind: 'event' }>[] = [];
  now = 1_000_000;
  windowOpen = true;
  busyElsewhere = new Set<string>();
  maxInFlightSeen = 0;

  constructor(
    public rollout: Rollout,
    public steps: Step[],
    public fleet: FleetView,
  ) {}

  tick(): Action[] {
    const actions = decide({
      rollout: this.rollout,
      steps: this.steps,
      commands: this.commands,
      fleet: this.fleet,
      busyElsewhere: this.busyElsewhere,
      windowOpen: this.windowOpen,
      now: this.now,
    });
    for (const a of actions) {
      if (a.kind === 'rollout') {
        assertRolloutTransition(this.rollout.state, a.to);
        this.rollout = { ...this.rollout, state: a.to, code: a.code ?? null, reason: a.reason ?? null };
      } else if (a.kind === 'data') this.rollout = { ...this.rollout, data: { ...this.rollout.data, ...a.data } };
      else if (a.kind === 'step') {
        const i = this.steps.findIndex((s) => s.nodeId === a.nodeId);
        const s = this.steps[i]!;
        assertStepTransition(s.state, a.to);
        this.steps[i] = { ...s, state: a.to, ...(a.code !== undefined ? { code: a.code } : {}), ...(a.patch ?? {}) };
      } else if (a.kind === 'send') {
        const i = this.steps.findIndex((s) => s.nodeId === a.nodeId);
        this.steps[i] = { ...this.steps[i]!, commandId: a.commandId, attempt: this.steps[i]!.attempt + 1 };
        this.commands.set(a.commandId, {
          id: a.commandId,
          nodeId: a.nodeId,
          rolloutId: 'r1',
          kind: a.command,
          digest: '',
          body: '',
          state: 'sent',
          outcome: null,
          code: null,
          message: null,
          runningVersion: null,
          downtimeMs: null,
          stoppedAtView: null,
          createdAt: this.now,
          updatedAt: this.now,
        });
        this.sent.push(a);
        if (a.command !== 'prepare') {
          // the node goes down while its agent works
          const n = this.fleet.nodes.get(a.nodeId)!;
          this.fleet.nodes.set(a.nodeId, { ...n, healthy: false, health: 'down', ready: false, isLeader: false });
        }
      } else this.events.push(a);
    }
    this.checkBudget();
    return actions;
  }

  /** Nodes down (in flight or unhealthy) must never exceed f. */
  checkBudget(): void {
    const f = Math.floor((this.fleet.n - 1) / 3);
    const down = new Set<string>();
    // Followers are outside the budget: only validators count against f.
    const validator = (id: string) => this.fleet.nodes.get(id)?.role !== 'follower';
    for (const s of this.steps) if (IN_FLIGHT_STEP_STATES.includes(s.state) && s.state !== 'verifying' && validator(s.nodeId)) down.add(s.nodeId);
    for (const n of this.fleet.nodes.values()) if (!n.healthy && validator(n.id)) down.add(n.id);
    this.maxInFlightSeen = Math.max(this.maxInFlightSeen, down.size);
    if (this.rollout.strategy !== 'halt' && down.size > f) throw new Error(`${down.size} nodes down exceeds f=${f}: ${[...down].join(',')}`);
  }

  /** The agent finishes a command. */
  finish(nodeId: string, outcome: 'succeeded' | 'rolled_back' | 'failed' = 'succeeded', code?: string): void {
    const step = this.steps.find((s) => s.nodeId === nodeId)!;
    const c = this.commands.get(step.commandId!)!;
    const n = this.fleet.nodes.get(nodeId)!;
    const newVersion =
      c.kind === 'upgrade' && outcome === 'succeeded' ? this.rollout.target.version : c.kind === 'rollback' ? (step.fromVersion ?? '1.0.0') : n.version;
    this.commands.set(c.id, { ...c, state: 'completed', outcome, code: (code ?? null) as never, runningVersion: newVersion, downtimeMs: 50 });
    if (c.kind !== 'prepare')
      this.fleet.nodes.set(nodeId, { ...n, healthy: true, health: 'up', ready: true, version: newVersion, finalizedHeight: this.fleet.maxHeight });
  }

  inFlight(): string[] {
    return this.steps.filter((s) => s.state === 'upgrading' || s.state === 'rolling_back').map((s) => s.nodeId);
  }

  setLeader(id: string): void {
    for (const [k, v] of this.fleet.nodes) this.fleet.nodes.set(k, { ...v, isLeader: k === id });
    this.fleet.leader = id;
  }

  advance(ms: number): void {
    this.now += ms;
    this.fleet.maxHeight = (this.fleet.maxHeight ?? 0) + 1;
    for (const [k, v] of this.fleet.nodes) if (v.healthy) this.fleet.nodes.set(k, { ...v, finalizedHeight: this.fleet.maxHeight });
  }
}
