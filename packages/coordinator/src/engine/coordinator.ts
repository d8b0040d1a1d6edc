/**
 * The coordinator service: the agent hub (websocket endpoint), the fleet view
 * and the rollout loop that feeds persisted state to the pure sequencer and
 * applies its actions. Every change is written to SQLite in one transaction
 * before anything goes on the wire.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import {
  CodedError,
  PROTOCOL_VERSION,
  commandDigest,
  coordinatorMessage,
  decodeAgentMessage,
  encode,
  faultTolerance,
  quorumSize,
  type AgentMessage,
  type Command,
  type ErrorCode,
  type NodeStatus,
  type Result,
} from '@guts-upgrade/protocol';
import type { CanaryLimits } from '../canary.js';
import type { Config } from '../config.js';
import { hashToken, type NodeRow, type Store } from '../db.js';
import type { FleetView, NodeView, Rollout, RolloutOptions, Step, Strategy } from '../model.js';
import { planRollout, type Plan, type RolloutRequest } from '../planner.js';
import { decide, disruption, type Action } from '../sequencer.js';
import {
  ACTIONS,
  ACTIVE_ROLLOUT_STATES,
  IN_FLIGHT_STEP_STATES,
  TERMINAL_ROLLOUT_STATES,
  assertRolloutTransition,
  assertStepTransition,
  type OperatorAction,
  type RolloutState,
} from '../states.js';
import { isOpen } from '../windows.js';
import { WebhookSender } from '../webhooks.js';

/** How long an informational write (progress, acks, 'sent' marks, node status) may wait to be committed. */
const FLUSH_MS = 100;

export interface RolloutInput {
  target: { version: string; url: string; sha256: string; signature?: string };
  strategy?: Strategy;
  nodes?: string[];
  options?: Partial<Omit<RolloutOptions, 'canaryLimits'>> & { canaryLimits?: Partial<CanaryLimits> };
}

interface LiveNode {
  socket: WebSocket | null;
  status: NodeStatus | null;
  agentVersion: string | null;
  lastSeenAt: number | null;
  connectedAt: number | null;
}

export class Coordinator extends EventEmitter {
  readonly live = new Map<string, LiveNode>();
  readonly webhooks: WebhookSender;
  private timer: NodeJS.Timeout | null = null;
  private ticking = false;
  private tickAgain = false;
  private tickScheduled = false;
  private stopped = false;
  private readonly redeliver = new Set<string>();
  /**
   * Writes waiting for the next transaction, in arrival order. Agent messages are
   * not committed one by one (each commit is an fsync, and a wave of nodes sends
   * its ~20 messages per upgrade at the same instants): they queue here and are
   * committed together (group commit) by whichever comes first of
   *  - the next tick, which commits them in one transaction BEFORE it reads the
   *    state it decides on, so a result or a rejection is durable before any
   *    command that depends on it is created or sent;
   *  - any other transaction of this class (see tx()), so the database sees every
   *    write in the order the messages arrived;
   *  - a short timer (FLUSH_MS) for the purely informational ones.
   * A kill -9 loses at most the queue: results and rejections come back from the
   * agent (hello.recentResults, and a re-sent command id is answered again), the
   * rest is informational (see onAgentMessage).
   */
  private pendingWrites: (() => void)[] = [];
  private flushTimer: NodeJS.Timeout | null = null;
  commandsSent = 0;
  results = new Map<string, number>();

  constructor(
    readonly config: Config,
    readonly store: Store,
    readonly log: Logger,
    readonly now: () => number = Date.now,
  ) {
    super();
    this.webhooks = new WebhookSender(store, config.webhooks, config.webhookRetry, log, (o) => this.emit('webhook', o));
    // Last known status survives a restart for display; "connected" does not.
    for (const n of store.activeNodes()) {
      this.live.set(n.id, { socket: null, status: null, agentVersion: n.agentVersion, lastSeenAt: n.lastSeenAt, connectedAt: null });
    }
  }

  start(): void {
    this.timer = setInterval(() => this.tick(), this.config.tickMs);
    this.webhooks.start(Math.min(200, this.config.tickMs));
    this.tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    // A graceful stop keeps what was queued (the store is closed after this).
    this.flushPending();
    this.webhooks.stop();
    for (const l of this.live.values()) l.socket?.terminate();
  }

  // ---------------------------------------------------------------- events

  private record(type: string, actor: string, rolloutId: string | null, nodeId: string | null, data: Record<string, unknown> = {}): void {
    const now = this.now();
    const seq = this.store.appendEvent({ at: now, actor, type, rolloutId, nodeId, data });
    this.webhooks.enqueue(seq, type, { seq, type, at: new Date(now).toISOString(), actor, rolloutId, nodeId, data }, now);
  }

  // ---------------------------------------------------------------- writes

  /** Queues a write for the next transaction; urgent ones (they change a decision) get a tick right away. */
  private queueWrite(write: () => void, urgent: boolean): void {
    this.pendingWrites.push(write);
    if (urgent) this.scheduleTick();
    else if (!this.flushTimer && !this.stopped) {
      this.flushTimer = setTimeout(() => {
        this.flushTimer = null;
        this.flushPending();
      }, FLUSH_MS);
      this.flushTimer.unref();
    }
  }

  /** Runs the queued writes; only ever called inside a transaction. */
  private writePending(): void {
    const list = this.pendingWrites;
    this.pendingWrites = [];
    for (const w of list) {
      try {
        // Nested: a savepoint, so one failing write is undone whole and does not take the others with it.
        this.store.tx(w);
      } catch (err) {
        this.log.error({ err }, 'queued write failed');
      }
    }
  }

  /** Commits the queued writes in one transaction. */
  flushPending(): void {
    if (this.pendingWrites.length === 0) return;
    const list = this.pendingWrites;
    try {
      this.store.tx(() => this.writePending());
    } catch (err) {
      // The commit itself failed: keep the writes for the next attempt.
      this.pendingWrites = [...list, ...this.pendingWrites];
      this.log.error({ err }, 'committing queued writes failed');
    }
  }

  /** A transaction that first writes everything queued before it, so writes reach the database in arrival order. */
  private tx<T>(fn: () => T): T {
    const list = this.pendingWrites;
    try {
      return this.store.tx(() => {
        this.writePending();
        return fn();
      });
    } catch (err) {
      // fn threw and everything was rolled back: the queued writes are not lost, they go with the next transaction.
      this.pendingWrites = [...list, ...this.pendingWrites];
      throw err;
    }
  }

  // ---------------------------------------------------------------- nodes

  registerNode(id: string, address: string | null, actor: string): { id: string; token: string } {
    const existing = this.store.node(id);
    if (existing && existing.revokedAt == null) throw new CodedError('E_CONFLICT', `node ${id} is already registered`, { field: 'id' });
    const token = 'gua_' + randomBytes(32).toString('base64url');
    this.tx(() => {
      this.store.insertNode(id, hashToken(token), address, this.now());
      this.record('node.registered', actor, null, id, { address });
    });
    this.live.set(id, { socket: null, status: null, agentVersion: null, lastSeenAt: null, connectedAt: null });
    return { id, token };
  }

  removeNode(id: string, actor: string): void {
    const n = this.store.node(id);
    if (!n || n.revokedAt != null) throw new CodedError('E_NOT_FOUND', `node ${id} is not registered`);
    const holder = this.store.nodesInActiveRollouts(ACTIVE_ROLLOUT_STATES).get(id);
    if (holder) throw new CodedError('E_CONFLICT', `node ${id} is part of active rollout ${holder}`, { rolloutId: holder });
    this.tx(() => {
      this.store.revokeNode(id, this.now());
      this.record('node.removed', actor, null, id);
    });
    const l = this.live.get(id);
    if (l?.socket) this.refuse(l.socket, 'E_AUTH', 'node registration revoked');
    this.live.delete(id);
  }

  nodeView(row: NodeRow, now = this.now()): NodeView {
    const l = this.live.get(row.id);
    const s = l?.status;
    const connected = !!l?.socket;
    const fresh = l?.lastSeenAt != null && now - l.lastSeenAt <= this.config.heartbeat.timeoutMs;
    return {
      id: row.id,
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
      lastSeenAt: l?.lastSeenAt ?? row.lastSeenAt,
      agent: connected ? (fresh ? 'connected' : 'stale') : 'unreachable',
      metrics: connected && fresh ? (s?.metrics ?? null) : null,
    };
  }

  fleetView(now = this.now()): FleetView {
    const rows = this.store.activeNodes();
    const nodes = new Map<string, NodeView>();
    for (const r of rows) nodes.set(r.id, this.nodeView(r, now));
    let leader: string | null = null;
    let bestView = -1;
    for (const v of nodes.values()) {
      if (v.isLeader && v.healthy && (v.view ?? 0) > bestView) {
        leader = v.id;
        bestView = v.view ?? 0;
      }
    }
    if (!leader) {
      const votes = new Map<string, number>();
      for (const v of nodes.values()) if (v.healthy && v.currentLeader && nodes.has(v.currentLeader)) votes.set(v.currentLeader, (votes.get(v.currentLeader) ?? 0) + 1);
      let max = 0;
      for (const [id, c] of votes) if (c > max) [leader, max] = [id, c];
    }
    let maxHeight: number | null = null;
    for (const v of nodes.values()) {
      if (v.healthy && v.finalizedHeight != null) maxHeight = Math.max(maxHeight ?? 0, v.finalizedHeight);
    }
    return { n: this.config.validators ?? rows.length, nodes, leader, maxHeight };
  }

  /** The fleet watch: skew, diverging heights, nodes down. */
  fleetWatch(now = this.now()) {
    const fleet = this.fleetView(now);
    const nodes = [...fleet.nodes.values()];
    const versions: Record<string, number> = {};
    for (const v of nodes) if (v.version) versions[v.version] = (versions[v.version] ?? 0) + 1;
    const heights = nodes.filter((v) => v.healthy && v.finalizedHeight != null).map((v) => v.finalizedHeight!);
    const minH = heights.length ? Math.min(...heights) : null;
    const maxH = heights.length ? Math.max(...heights) : null;
    const spread = minH != null && maxH != null ? maxH - minH : 0;
    const down = nodes.filter((v) => !v.healthy).map((v) => v.id);
    const inFlight = new Set(this.store.openCommands().filter((c) => c.kind !== 'prepare').map((c) => c.nodeId));
    const { budget } = disruption({ fleet, steps: [], busyElsewhere: inFlight });
    const alerts: { code: string; message: string }[] = [];
    if (Object.keys(versions).length > 1) alerts.push({ code: 'VERSION_SKEW', message: `versions: ${Object.entries(versions).map(([v, c]) => `${v}×${c}`).join(', ')}` });
    if (spread > this.config.defaults.syncDistance * 4) alerts.push({ code: 'HEIGHT_DIVERGENCE', message: `finalized heights differ by ${spread}` });
    if (down.length > 0) alerts.push({ code: 'NODES_DOWN', message: `down: ${down.join(', ')}` });
    // A node whose agent vanished mid-step stays counted as in flight (safe for f) until its
    // result arrives; say so loudly instead of showing a silent "upgrading".
    const lost = nodes.filter((v) => inFlight.has(v.id) && v.agent !== 'connected');
    if (lost.length > 0) {
      alerts.push({ code: 'IN_FLIGHT_UNREACHABLE', message: `agent ${lost.map((v) => `${v.id} (${v.agent}, last seen ${v.lastSeenAt ? new Date(v.lastSeenAt).toISOString() : 'never'})`).join(', ')} stopped reporting mid-command; its node state is unknown and counts as down until its result arrives` });
    }
    if (down.length > faultTolerance(fleet.n)) alerts.push({ code: 'QUORUM_AT_RISK', message: `${down.length} nodes down exceeds f = ${faultTolerance(fleet.n)}` });
    return {
      n: fleet.n,
      f: faultTolerance(fleet.n),
      quorum: quorumSize(fleet.n),
      disruptionBudget: budget,
      leader: fleet.leader,
      versions,
      versionSkew: Object.keys(versions).length > 1,
      heights: { min: minH, max: maxH, spread },
      heightsDiverging: spread > this.config.defaults.syncDistance * 4,
      down,
      inFlight: [...inFlight],
      unreachable: nodes.filter((v) => v.agent !== 'connected').map((v) => v.id),
      alerts,
      nodes: nodes.map((v) => ({ ...v, lastSeenAt: v.lastSeenAt ? new Date(v.lastSeenAt).toISOString() : null })),
    };
  }

  // ---------------------------------------------------------------- agents

  private refuse(ws: WebSocket, code: ErrorCode, message: string): void {
    try {
      ws.send(encode(coordinatorMessage('refused', { code, message })));
    } catch {
      /* socket already gone */
    }
    ws.close(4000, code);
  }

  /** Authenticates a new agent connection and runs its message loop. */
  handleAgent(ws: WebSocket, req: IncomingMessage): void {
    const auth = String(req.headers.authorization ?? '');
    const nodeId = String(req.headers['x-guts-node-id'] ?? '');
    const token = /^Bearer (.+)$/.exec(auth)?.[1];
    const row = nodeId ? this.store.node(nodeId) : undefined;
    const ok =
      !!token &&
      !!row &&
      row.revokedAt == null &&
      timingSafeEqual(Buffer.from(hashToken(token), 'hex'), Buffer.from(row.tokenHash, 'hex'));
    if (!ok) {
      this.log.warn({ nodeId }, 'agent refused: bad credentials');
      this.store.appendEvent({ at: this.now(), actor: `agent:${nodeId || '?'}`, type: 'agent.refused', nodeId: row ? nodeId : null, data: { code: 'E_AUTH' } });
      this.refuse(ws, 'E_AUTH', 'unknown node, revoked node or bad token');
      return;
    }
    let helloDone = false;
    const helloTimer = setTimeout(() => {
      if (!helloDone) this.refuse(ws, 'E_BAD_MESSAGE', 'no hello received');
    }, 15_000);
    helloTimer.unref();
    ws.on('message', (raw: Buffer) => {
      const decoded = decodeAgentMessage(raw);
      if (!decoded.ok) {
        this.log.warn({ nodeId, error: decoded.error }, 'bad agent message');
        if (!helloDone || decoded.code === 'E_PROTOCOL_VERSION') this.refuse(ws, decoded.code, decoded.error);
        return;
      }
      const msg = decoded.message;
      if (!helloDone) {
        if (msg.type !== 'hello') return this.refuse(ws, 'E_BAD_MESSAGE', `expected hello, got ${msg.type}`);
        if (msg.nodeId !== nodeId) return this.refuse(ws, 'E_AUTH', `hello names ${msg.nodeId} but the credentials are for ${nodeId}`);
        helloDone = true;
        clearTimeout(helloTimer);
        this.onHello(ws, msg);
        return;
      }
      try {
        this.onAgentMessage(nodeId, msg);
      } catch (err) {
        this.log.error({ err, nodeId }, 'agent message handling failed');
      }
    });
    ws.on('close', () => {
      clearTimeout(helloTimer);
      if (this.stopped) return;
      const l = this.live.get(nodeId);
      if (l && l.socket === ws) {
        l.socket = null;
        this.log.info({ nodeId }, 'agent disconnected');
        const at = this.now();
        this.queueWrite(() => this.store.appendEvent({ at, actor: `agent:${nodeId}`, type: 'agent.disconnected', nodeId }), false);
        this.emit('fleet');
        this.scheduleTick();
      }
    });
    ws.on('error', (err) => this.log.warn({ err, nodeId }, 'agent socket error'));
  }

  private onHello(ws: WebSocket, hello: Extract<AgentMessage, { type: 'hello' }>): void {
    const id = hello.nodeId;
    const now = this.now();
    const prev = this.live.get(id);
    if (prev?.socket && prev.socket !== ws) prev.socket.close(4001, 'replaced by a newer connection');
    this.live.set(id, { socket: ws, status: hello.status, agentVersion: hello.agentVersion, lastSeenAt: now, connectedAt: now });
    // Urgent: the recent results must be committed before anything is decided or re-sent; the
    // scheduled tick commits them (with every other hello of this turn: one fsync for a reconnect storm).
    this.queueWrite(() => {
      this.persistStatus(id, hello.status, hello.agentVersion, now);
      this.store.appendEvent({ at: now, actor: `agent:${id}`, type: 'agent.connected', nodeId: id, data: { agentVersion: hello.agentVersion, version: hello.status.nodeVersion, proto: hello.proto } });
      for (const r of hello.recentResults) this.onResult(id, r);
    }, true);
    ws.send(encode(coordinatorMessage('welcome', { heartbeatIntervalMs: this.config.heartbeat.intervalMs })));
    // Re-deliver every command still without a result, with the SAME id (the agent dedupes), once
    // the results above are committed: see redeliverOpen().
    this.redeliver.add(id);
    this.emit('fleet');
  }

  /** Re-sends the open commands of the nodes that (re)connected; runs in tick() after the queued writes are committed. */
  private redeliverOpen(): void {
    if (this.redeliver.size === 0) return;
    const ids = [...this.redeliver];
    this.redeliver.clear();
    for (const id of ids) for (const c of this.store.openCommands(id)) this.deliver(c.id, c.nodeId, c.body);
  }

  private persistStatus(id: string, s: NodeStatus, agentVersion: string | null, now: number): void {
    this.store.updateNodeStatus(id, {
      agentVersion,
      version: s.nodeVersion,
      health: s.health,
      ready: s.ready,
      isLeader: s.isLeader,
      currentLeader: s.currentLeader,
      finalizedHeight: s.finalizedHeight,
      view: s.view,
      peerCount: s.peerCount,
      busy: s.busy ? { commandId: s.busy.commandId, kind: s.busy.kind, step: s.busy.step } : null,
      lastSeenAt: now,
    });
  }

  private onAgentMessage(nodeId: string, msg: AgentMessage): void {
    if (this.stopped) return;
    const now = this.now();
    const l = this.live.get(nodeId);
    if (!l) return;
    switch (msg.type) {
      case 'hello':
        return;
      case 'heartbeat': {
        const before = l.status;
        l.status = msg.status;
        l.lastSeenAt = now;
        // Persist only what changes the picture, not every heartbeat. The row is a display copy
        // (decisions use the live status; a restarted coordinator waits for the hello), so it
        // rides with the next transaction instead of costing an fsync of its own.
        if (!before || before.nodeVersion !== msg.status.nodeVersion || before.isLeader !== msg.status.isLeader || before.health !== msg.status.health || before.ready !== msg.status.ready || (before.busy?.commandId ?? null) !== (msg.status.busy?.commandId ?? null)) {
          const status = msg.status;
          this.queueWrite(() => this.persistStatus(nodeId, status, null, now), false);
          // A node back up on the new version may finish its step: decide now, not at the next timer tick.
          this.scheduleTick();
        }
        this.emit('fleet');
        return;
      }
      case 'ack': {
        const c = this.store.command(msg.commandId);
        if (!c || c.nodeId !== nodeId || c.state === 'completed') return;
        if (msg.status === 'rejected') {
          // A rejection decides the step: urgent, committed before the next decision.
          this.queueWrite(() => {
            const cur = this.store.command(c.id);
            if (!cur || cur.state === 'completed' || cur.state === 'rejected') return;
            this.store.setCommandState(c.id, 'rejected', now, { code: msg.code ?? 'E_INTERNAL', message: msg.message ?? null });
            this.record('command.rejected', `agent:${nodeId}`, c.rolloutId, nodeId, { commandId: c.id, code: msg.code, message: msg.message });
          }, true);
        } else {
          // 'accepted'/'duplicate' are informational: the command stays open (re-sent on reconnect,
          // counted in flight) exactly as when it was 'sent', so losing this write changes nothing.
          const state = msg.status === 'duplicate' ? 'duplicate' : 'accepted';
          this.queueWrite(() => this.store.advanceCommandState(c.id, state, ['pending', 'sent', 'accepted', 'duplicate'], now), false);
        }
        return;
      }
      case 'progress': {
        const c = this.store.command(msg.commandId);
        if (!c || c.nodeId !== nodeId) return;
        // Progress is informational (display and the event log); no decision reads it and a restarted
        // coordinator does not need it, so it is not worth an fsync per message: it is batched with the
        // next transaction (at most FLUSH_MS later). A kill -9 may lose the last FLUSH_MS of progress.
        this.queueWrite(() => {
          this.store.setProgressForCommand(msg.commandId, `${msg.step}:${msg.state}`, now);
          this.store.appendEvent({ at: now, actor: `agent:${nodeId}`, type: 'node.progress', rolloutId: c.rolloutId, nodeId, data: { commandId: c.id, step: msg.step, state: msg.state, message: msg.message } });
        }, false);
        this.emit('progress', { nodeId, commandId: msg.commandId, step: msg.step, state: msg.state });
        return;
      }
      case 'result':
        // Urgent: committed (together with every other result of this event-loop turn) by the
        // scheduled tick before it decides anything. If we die before that commit, the agent
        // still has the result and sends it again in hello.recentResults.
        this.queueWrite(() => this.onResult(nodeId, msg), true);
        return;
    }
  }

  /** Records a command's result once (a re-sent result is ignored). */
  private onResult(nodeId: string, r: Result): void {
    const c = this.store.command(r.commandId);
    if (!c || c.nodeId !== nodeId) {
      this.store.appendEvent({ at: this.now(), actor: `agent:${nodeId}`, type: 'result.unknown', nodeId, data: { commandId: r.commandId, outcome: r.outcome } });
      return;
    }
    if (c.state === 'completed') return;
    this.store.completeCommand(
      c.id,
      { outcome: r.outcome, code: r.code ?? null, message: r.message ?? null, runningVersion: r.runningVersion, downtimeMs: r.downtimeMs ?? null, result: r },
      this.now(),
    );
    this.results.set(`${c.kind}:${r.outcome}`, (this.results.get(`${c.kind}:${r.outcome}`) ?? 0) + 1);
    this.record('command.result', `agent:${nodeId}`, c.rolloutId, nodeId, {
      commandId: c.id,
      kind: c.kind,
      outcome: r.outcome,
      code: r.code,
      runningVersion: r.runningVersion,
      downtimeMs: r.downtimeMs,
      ...(r.migration ? { migration: r.migration } : {}),
    });
  }

  /**
   * Sends a command whose row is already committed. The 'sent' mark is informational ('pending'
   * and 'sent' are both open: re-sent with the same id on reconnect, counted in flight), so it
   * is queued and committed once for all the sends of a tick, right after them.
   */
  private deliver(id: string, nodeId: string, body: string): void {
    const l = this.live.get(nodeId);
    if (!l?.socket || l.socket.readyState !== 1) return;
    l.socket.send(body);
    this.commandsSent++;
    const at = this.now();
    this.queueWrite(() => this.store.advanceCommandState(id, 'sent', ['pending'], at), false);
  }

  // ---------------------------------------------------------------- rollouts

  private request(input: RolloutInput): RolloutRequest {
    const d = this.config.defaults;
    const o = input.options ?? {};
    const strategy = input.strategy ?? 'rolling';
    return {
      target: { version: input.target.version, url: input.target.url, sha256: input.target.sha256, ...(input.target.signature ? { signature: input.target.signature } : {}) },
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
        canaryLimits: { ...d.canaryLimits, ...(o.canaryLimits ?? {}) },
      },
    };
  }

  plan(input: RolloutInput): Plan {
    return planRollout(this.request(input), this.fleetView(), this.config.windows, this.now());
  }

  createRollout(input: RolloutInput, actor: string): Rollout {
    const req = this.request(input);
    const plan = planRollout(req, this.fleetView(), this.config.windows, this.now());
    const now = this.now();
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
    this.tx(() => {
      const held = this.store.nodesInActiveRollouts(ACTIVE_ROLLOUT_STATES);
      const overlap = plan.nodes.filter((n) => held.has(n));
      if (overlap.length > 0) {
        throw new CodedError('E_CONFLICT', `nodes ${overlap.join(', ')} are in active rollout ${held.get(overlap[0]!)}`, { rolloutId: held.get(overlap[0]!) });
      }
      this.store.insertRollout(rollout);
      const inWaves = new Set(plan.waves.flat());
      const skip = new Set(plan.skip);
      const order = [...inWaves, ...plan.skip, ...plan.nodes.filter((n) => !inWaves.has(n) && !skip.has(n))];
      order.forEach((nodeId, position) => {
        const skipped = skip.has(nodeId);
        this.store.insertStep({
          rolloutId: id, nodeId, position, state: 'pending', commandId: null, attempt: 0, fromVersion: null, code: null, message: null,
          downtimeMs: null, dispatchSeq: null, startedAt: null, resultAt: null, syncedAt: null, finishedAt: null, updatedAt: now, progress: null,
        });
        if (skipped) this.store.updateStep(id, nodeId, { state: 'skipped', message: 'already at the target version', finishedAt: now }, now);
      });
      this.record('rollout.created', actor, id, null, { strategy: rollout.strategy, target: rollout.target, waves: plan.waves, options: rollout.options });
    });
    this.tick();
    return this.store.rollout(id)!;
  }

  rolloutDetail(id: string) {
    const r = this.store.rollout(id);
    if (!r) throw new CodedError('E_NOT_FOUND', `no rollout ${id}`);
    const fleet = this.fleetView();
    // In-flight steps carry the agent link, so a lost agent never hides behind "upgrading".
    const steps = this.store.steps(id).map((s) =>
      IN_FLIGHT_STEP_STATES.includes(s.state) ? { ...s, agent: fleet.nodes.get(s.nodeId)?.agent ?? 'unreachable' } : s,
    );
    return { rollout: r, steps };
  }

  /** Applies an operator action; throws E_INVALID_STATE (nothing changed) when invalid now. */
  action(id: string, action: OperatorAction, actor: string, reason: string | null): Rollout {
    const r = this.store.rollout(id);
    if (!r) throw new CodedError('E_NOT_FOUND', `no rollout ${id}`);
    const valid = ACTIONS[action] as readonly RolloutState[];
    if (!valid.includes(r.state)) {
      throw new CodedError('E_INVALID_STATE', `cannot ${action} a rollout that is ${r.state} (valid in: ${valid.join(', ')})`, { state: r.state });
    }
    const now = this.now();
    this.tx(() => {
      const move = (to: RolloutState, code: ErrorCode | null = null, why: string | null = reason) => {
        assertRolloutTransition(r.state, to);
        this.store.setRolloutState(id, to, code, why, now);
        this.record('rollout.state', actor, id, null, { from: r.state, to, code, reason: why });
      };
      switch (action) {
        case 'pause':
          move('paused', null, reason ?? `paused by ${actor}`);
          this.record('rollout.paused', actor, id, null, { reason });
          break;
        case 'resume': {
          const gateTo: RolloutState =
            r.options.requireApproval && r.data.approvedAt == null ? 'awaiting_approval' : r.options.window && !this.windowOpen(r) && r.data.haltSentAt == null && !this.anyDispatched(id) ? 'scheduled' : 'running';
          // A resumed rollout does not stop again on failures the operator has seen.
          const failed = this.store.steps(id).filter((s) => s.state === 'failed').map((s) => s.nodeId);
          this.store.patchRolloutData(id, { handledFailures: [...new Set([...(r.data.handledFailures ?? []), ...failed])] }, now);
          move(gateTo);
          this.record('rollout.resumed', actor, id, null, { reason, to: gateTo });
          break;
        }
        case 'abort':
          move('aborted', null, reason ?? `aborted by ${actor}`);
          this.record('rollout.aborted', actor, id, null, { reason });
          break;
        case 'rollback':
          move('rolling_back', r.code, reason ?? `rollback requested by ${actor}`);
          this.record('rollout.rolling_back', actor, id, null, { reason });
          break;
        case 'approve':
          if (r.data.approvedAt != null) throw new CodedError('E_INVALID_STATE', `rollout ${id} is already approved by ${r.data.approvedBy}`);
          this.store.patchRolloutData(id, { approvedAt: now, approvedBy: actor }, now);
          this.record('rollout.approved', actor, id, null, { reason });
          break;
      }
    });
    this.tick();
    return this.store.rollout(id)!;
  }

  private anyDispatched(id: string): boolean {
    return this.store.steps(id).some((s) => s.dispatchSeq != null || s.state !== 'pending');
  }

  windowOpen(r: Rollout, now = this.now()): boolean {
    if (!r.options.window) return true;
    const w = this.config.windows.find((x) => x.name === r.options.window);
    return !!w && isOpen(w, now);
  }

  // ---------------------------------------------------------------- the loop

  /**
   * Asks for a tick once the current event-loop turn is done: every agent message read in this
   * turn is handled first, then one tick decides on all of them (instead of a full tick per
   * message, which made a wave O(wave²)).
   */
  scheduleTick(): void {
    if (this.tickScheduled || this.stopped) return;
    this.tickScheduled = true;
    setImmediate(() => {
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
        this.flushPending();
        this.redeliverOpen();
        this.tickOnce();
      } while (this.tickAgain && !this.stopped);
      this.flushPending();
    } finally {
      this.ticking = false;
    }
  }

  private tickOnce(): void {
    const now = this.now();
    const active = this.store.rolloutsInStates(ACTIVE_ROLLOUT_STATES);
    const ids = new Set([...active.map((r) => r.id), ...this.store.rolloutsWithStepsIn(IN_FLIGHT_STEP_STATES)]);
    const fleet = this.fleetView(now);
    const open = this.store.openCommands();
    for (const id of ids) {
      const rollout = this.store.rollout(id);
      if (!rollout) continue;
      const steps = this.store.steps(id);
      const busyElsewhere = new Set<string>();
      for (const c of open) if (c.rolloutId !== id && c.kind !== 'prepare') busyElsewhere.add(c.nodeId);
      for (const other of ids) {
        if (other === id) continue;
        for (const s of this.store.steps(other)) if (IN_FLIGHT_STEP_STATES.includes(s.state)) busyElsewhere.add(s.nodeId);
      }
      let actions: Action[];
      try {
        actions = decide({ rollout, steps, commands: this.store.commandsFor(id), fleet, busyElsewhere, windowOpen: this.windowOpen(rollout, now), now });
      } catch (err) {
        this.log.error({ err, rolloutId: id }, 'sequencer failed');
        continue;
      }
      if (actions.length === 0) continue;
      const toSend: { id: string; nodeId: string; body: string }[] = [];
      try {
        this.tx(() => this.apply(rollout, steps, actions, toSend, now));
      } catch (err) {
        this.log.error({ err, rolloutId: id, actions }, 'applying sequencer actions failed; nothing changed');
        continue;
      }
      for (const c of toSend) this.deliver(c.id, c.nodeId, c.body);
      this.emit('rollout', id);
      this.tickAgain = true;
    }
  }

  private apply(rollout: Rollout, steps: Step[], actions: Action[], toSend: { id: string; nodeId: string; body: string }[], now: number): void {
    const stepState = new Map(steps.map((s) => [s.nodeId, s] as const));
    let state = rollout.state;
    for (const a of actions) {
      switch (a.kind) {
        case 'rollout':
          assertRolloutTransition(state, a.to);
          this.store.setRolloutState(rollout.id, a.to, a.code ?? null, a.reason ?? null, now);
          this.record('rollout.state', 'coordinator', rollout.id, null, { from: state, to: a.to, code: a.code, reason: a.reason });
          if (a.to === 'rolled_back') this.record('rollout.rolled_back', 'coordinator', rollout.id, null, { code: a.code });
          this.log.info({ rolloutId: rollout.id, from: state, to: a.to, code: a.code, reason: a.reason }, 'rollout state');
          state = a.to;
          break;
        case 'data':
          this.store.patchRolloutData(rollout.id, a.data, now);
          break;
        case 'step': {
          const s = stepState.get(a.nodeId);
          if (!s) throw new Error(`no step for ${a.nodeId}`);
          assertStepTransition(s.state, a.to);
          this.store.updateStep(rollout.id, a.nodeId, { state: a.to, ...(a.code !== undefined ? { code: a.code } : {}), ...(a.message !== undefined ? { message: a.message } : {}), ...(a.patch ?? {}) }, now);
          stepState.set(a.nodeId, { ...s, state: a.to });
          break;
        }
        case 'send': {
          const s = stepState.get(a.nodeId)!;
          const attempt = (steps.find((x) => x.nodeId === a.nodeId)?.attempt ?? 0) + 1;
          const base = { id: a.commandId, rolloutId: rollout.id, issuedAt: new Date(now).toISOString() };
          const cmd: Command =
            a.command === 'rollback'
              ? coordinatorMessage('command', { ...base, kind: 'rollback', ...(s.fromVersion ? { toVersion: s.fromVersion } : {}) })
              : coordinatorMessage('command', { ...base, kind: a.command, target: rollout.target, ...(a.options ? { options: a.options } : {}) });
          const body = encode(cmd);
          this.store.insertCommand({ id: a.commandId, nodeId: a.nodeId, rolloutId: rollout.id, kind: a.command, digest: commandDigest(cmd), body, state: 'pending', createdAt: now, updatedAt: now });
          this.store.updateStep(rollout.id, a.nodeId, { commandId: a.commandId, attempt, progress: null }, now);
          this.record('command.sent', 'coordinator', rollout.id, a.nodeId, { commandId: a.commandId, kind: a.command, options: a.options });
          toSend.push({ id: a.commandId, nodeId: a.nodeId, body });
          break;
        }
        case 'event':
          this.record(a.type, 'coordinator', rollout.id, a.nodeId ?? null, a.data ?? {});
          break;
      }
    }
  }
}

export { PROTOCOL_VERSION, TERMINAL_ROLLOUT_STATES };
