/**
 * The agent hub: the websocket endpoint of the agents. It authenticates each
 * connection, keeps the live status of every agent, turns agent messages into
 * queued writes (see write-queue.ts for when they are committed) and delivers
 * commands. It decides nothing: the rollout loop reads what it keeps and sends
 * through it (it is the loop's AgentTransport).
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import {
  coordinatorMessage,
  decodeAgentMessage,
  encode,
  NodeIdSchema,
  type AgentMessage,
  type CommandKind,
  type ErrorCode,
  type NodeRole,
  type NodeStatus,
  type Outcome,
  type Result,
} from '@guts-upgrade/protocol';
import { hashToken, type Store } from '../db.js';
import { canCommandMove, commandStatesInto, isCommandFinished } from '../states.js';
import type { Audit } from './audit.js';
import type { ChainTracker } from './chain-view.js';
import type { AgentTransport, LiveNode, Timers } from './effects.js';
import { RefusalLog, type RefusalReason } from './refusal-log.js';
import { TokenBucket } from './token-bucket.js';
import type { WriteQueue } from './write-queue.js';

/** A node id as the hello must carry it: a header that is not one names no node and is not looked up. */
const NODE_ID = new RegExp(NodeIdSchema.pattern ?? '^$');

/** How long a new connection may take to say hello. */
const HELLO_TIMEOUT_MS = 15_000;

/**
 * The close code of a connection cut off for sending too much (4000 + the HTTP 429 it mirrors);
 * refusals close with 4000, a replaced connection with 4001.
 */
export const RATE_LIMITED_CLOSE = 4029;

/** What the hub tells listeners (the metrics count them). */
export type HubEvent = 'fleet' | 'progress' | 'result' | 'handshake-refused' | 'agent-rate-limited';

/** A command result as recorded, for listeners (the metrics count results and observe downtime). */
export interface ResultEvent {
  nodeId: string;
  kind: CommandKind;
  outcome: Outcome;
  /** Stop to ready as the agent measured it; absent when the node was not stopped. */
  downtimeMs: number | null;
}

export interface AgentHubDeps {
  store: Store;
  writes: WriteQueue;
  audit: Audit;
  log: Logger;
  now: () => number;
  timers: Timers;
  heartbeatIntervalMs: number;
  /** Per agent: messages a second and the burst allowed before it is cut off. */
  messageLimit: { perSecond: number; burst: number };
  /** At most one log line about refused handshakes per this interval. */
  refusedLogIntervalMs: number;
  /** Asks the rollout loop for a tick soon (something that may change a decision arrived). */
  wake: () => void;
  /** Tells listeners the fleet picture or a node's progress changed. */
  notify: (event: HubEvent, detail?: unknown) => void;
  /** What the agents say about the chain, weighed against each other. */
  chain: ChainTracker;
}

export class AgentHub implements AgentTransport {
  private readonly links = new Map<string, LiveNode>();
  private readonly sockets = new Map<string, WebSocket>();
  private readonly toRedeliver = new Set<string>();
  /** Per node, not per connection: reconnecting does not refill an agent's bucket. */
  private readonly buckets = new Map<string, TokenBucket>();
  /** When each node was last written to the audit log as cut off (once per refusal-log interval). */
  private readonly cutOffRecorded = new Map<string, number>();
  private readonly refusals: RefusalLog;
  /** Each connected node's registered role, read at its hello (a role changes only by registering again). */
  private readonly roles = new Map<string, NodeRole>();
  private stopped = false;
  commandsSent = 0;

  constructor(private readonly d: AgentHubDeps) {
    this.refusals = new RefusalLog({ log: d.log, timers: d.timers, now: d.now, intervalMs: d.refusedLogIntervalMs });
    // Last known status survives a restart for display; "connected" does not.
    for (const n of d.store.activeNodes()) this.track(n.id, n.agentVersion, n.lastSeenAt);
  }

  // ------------------------------------------------------------ the loop's transport

  send(nodeId: string, body: string): boolean {
    const ws = this.sockets.get(nodeId);
    if (ws?.readyState !== 1) return false;
    ws.send(body);
    this.commandsSent++;
    return true;
  }

  live(): ReadonlyMap<string, LiveNode> {
    return this.links;
  }

  reconnected(): string[] {
    const ids = [...this.toRedeliver];
    this.toRedeliver.clear();
    return ids;
  }

  // ------------------------------------------------------------ the node registry's hooks

  /** Starts tracking a newly registered node (not connected yet). */
  track(nodeId: string, agentVersion: string | null = null, lastSeenAt: number | null = null): void {
    this.links.set(nodeId, { connected: false, status: null, agentVersion, lastSeenAt, connectedAt: null });
  }

  /** Forgets a removed node and refuses its open connection. */
  forget(nodeId: string): void {
    const ws = this.sockets.get(nodeId);
    if (ws) this.refuse(ws, 'E_AUTH', 'node registration revoked');
    this.sockets.delete(nodeId);
    this.links.delete(nodeId);
    this.roles.delete(nodeId);
    this.buckets.delete(nodeId);
    this.cutOffRecorded.delete(nodeId);
  }

  stop(): void {
    this.stopped = true;
    this.refusals.summarise();
    for (const ws of this.sockets.values()) ws.terminate();
  }

  // ------------------------------------------------------------ connections

  private refuse(ws: WebSocket, code: ErrorCode, message: string, closeCode = 4000): void {
    try {
      ws.send(encode(coordinatorMessage('refused', { code, message })));
    } catch {
      /* socket already gone */
    }
    ws.close(closeCode, code);
  }

  /**
   * The node a request's credentials prove, or why they prove none. Only a registered node's id
   * comes back, never the header itself; a header that is not a well-formed id is not even looked up.
   */
  private authenticate(req: IncomingMessage): { nodeId: string } | { refused: RefusalReason; known: string | null } {
    const header = req.headers['x-guts-node-id'];
    const nodeId = typeof header === 'string' && NODE_ID.test(header) ? header : '';
    const token = /^Bearer (.+)$/.exec(String(req.headers.authorization ?? ''))?.[1];
    if (!token || typeof header !== 'string' || header === '') return { refused: 'no_credentials', known: null };
    const row = nodeId ? this.d.store.node(nodeId) : undefined;
    if (!row) return { refused: 'unknown_node', known: null };
    if (row.revokedAt != null) return { refused: 'revoked', known: row.id };
    if (!timingSafeEqual(Buffer.from(hashToken(token), 'hex'), Buffer.from(row.tokenHash, 'hex'))) return { refused: 'bad_token', known: row.id };
    return { nodeId: row.id };
  }

  /** Authenticates a new agent connection and runs its message loop. */
  handleAgent(ws: WebSocket, req: IncomingMessage): void {
    const auth = this.authenticate(req);
    if (!('nodeId' in auth)) {
      // Counted and summarised, never a database row: see refusal-log.ts.
      this.refusals.record(auth.refused, auth.known);
      this.d.notify('handshake-refused', auth.refused);
      this.refuse(ws, 'E_AUTH', 'unknown node, revoked node or bad token');
      return;
    }
    const { nodeId } = auth;
    let cutOff = false;
    let helloDone = false;
    const cancelHelloTimer = this.d.timers.after(HELLO_TIMEOUT_MS, () => {
      if (!helloDone) this.refuse(ws, 'E_BAD_MESSAGE', 'no hello received');
    });
    ws.on('message', (raw: Buffer) => {
      // Counted before it is even decoded: decoding is the cost a flood would run up.
      if (cutOff) return;
      if (!this.bucket(nodeId).take(this.d.now())) {
        cutOff = true;
        this.cutOff(ws, nodeId);
        return;
      }
      const decoded = decodeAgentMessage(raw);
      if (!decoded.ok) {
        this.d.log.warn({ nodeId, error: decoded.error }, 'bad agent message');
        if (!helloDone || decoded.code === 'E_PROTOCOL_VERSION') this.refuse(ws, decoded.code, decoded.error);
        return;
      }
      const msg = decoded.message;
      if (!helloDone) {
        if (msg.type !== 'hello') return this.refuse(ws, 'E_BAD_MESSAGE', `expected hello, got ${msg.type}`);
        if (msg.nodeId !== nodeId) return this.refuse(ws, 'E_AUTH', `hello names ${msg.nodeId} but the credentials are for ${nodeId}`);
        const refusal = this.roleRefusal(nodeId, msg.role) ?? this.bindingRefusal(nodeId, msg.validatorPubkey);
        if (refusal) return this.refuse(ws, refusal.code, refusal.message);
        helloDone = true;
        cancelHelloTimer();
        this.onHello(ws, msg);
        return;
      }
      try {
        this.onMessage(nodeId, msg);
      } catch (err) {
        this.d.log.error({ err, nodeId }, 'agent message handling failed');
      }
    });
    ws.on('close', () => {
      cancelHelloTimer();
      if (this.stopped) return;
      if (this.sockets.get(nodeId) !== ws) return;
      this.sockets.delete(nodeId);
      const l = this.links.get(nodeId);
      if (l) l.connected = false;
      this.d.log.info({ nodeId }, 'agent disconnected');
      const at = this.d.now();
      this.d.writes.queue(() => this.d.store.appendEvent({ at, actor: `agent:${nodeId}`, type: 'agent.disconnected', nodeId }), false);
      this.d.notify('fleet');
      this.d.wake();
    });
    ws.on('error', (err) => this.d.log.warn({ err, nodeId }, 'agent socket error'));
  }

  private bucket(nodeId: string): TokenBucket {
    let b = this.buckets.get(nodeId);
    if (!b) {
      b = new TokenBucket(this.d.messageLimit.perSecond, this.d.messageLimit.burst, this.d.now());
      this.buckets.set(nodeId, b);
    }
    return b;
  }

  /**
   * Closes the connection of an agent that sent more than its limit. The other agents are not
   * affected; the agent backs off as after any refusal and comes back with its bucket refilled.
   * The audit log gets one row per node and interval, however often a broken agent floods.
   */
  private cutOff(ws: WebSocket, nodeId: string): void {
    const { perSecond, burst } = this.d.messageLimit;
    const message = `more than ${perSecond} messages a second (burst ${burst}): connection closed; see limits.agentMessages`;
    this.d.notify('agent-rate-limited', nodeId);
    const now = this.d.now();
    const last = this.cutOffRecorded.get(nodeId);
    if (last === undefined || now - last >= this.d.refusedLogIntervalMs) {
      this.cutOffRecorded.set(nodeId, now);
      this.d.log.warn({ nodeId, code: 'E_RATE_LIMITED', perSecond, burst }, 'agent cut off: too many messages');
      this.d.writes.queue(
        () => this.d.audit.record('agent.rate_limited', `agent:${nodeId}`, null, nodeId, { code: 'E_RATE_LIMITED', perSecond, burst }),
        false,
      );
    }
    this.refuse(ws, 'E_RATE_LIMITED', message, RATE_LIMITED_CLOSE);
  }

  /**
   * The validator an agent says its node runs as must match what the coordinator bound the
   * node to, belong to no other node, and be a validator of the adopted set. A first claim
   * binds the node (the node's own is_leader + current_leader confirm it later, see chain-view.ts).
   */
  /**
   * The role the agent's config gives its node must be the one the node was registered with:
   * neither side alone may put a node outside the safety budget. An agent before protocol 1.5
   * says no role; the registration then stands alone.
   */
  private roleRefusal(nodeId: string, claimed: NodeRole | undefined): { code: ErrorCode; message: string } | null {
    const row = this.d.store.node(nodeId);
    if (row) this.roles.set(nodeId, row.role);
    if (!claimed || !row || claimed === row.role) return null;
    return {
      code: 'E_ROLE_MISMATCH',
      message: `node ${nodeId} is registered as a ${row.role}, but its agent's config says ${claimed}: fix one of them (remove and add the node again to change its registration)`,
    };
  }

  /** Whether the node was registered as a follower (its chain reports are then not weighed: f + 1 counts validators). */
  private follower(nodeId: string): boolean {
    return this.roles.get(nodeId) === 'follower';
  }

  private bindingRefusal(nodeId: string, claimed: string | undefined): { code: ErrorCode; message: string } | null {
    if (!claimed) return null;
    const pubkey = claimed.toLowerCase();
    const row = this.d.store.node(nodeId);
    if (row?.pubkey && row.pubkey !== pubkey) {
      return {
        code: 'E_BINDING_CHANGED',
        message: `node ${nodeId} is bound to validator ${row.pubkey.slice(0, 16)}…, but its agent now says ${pubkey.slice(0, 16)}…`,
      };
    }
    const holder = this.d.store.nodeByPubkey(pubkey);
    if (holder && holder !== nodeId) return { code: 'E_BINDING_DUPLICATE', message: `validator ${pubkey.slice(0, 16)}… is already bound to node ${holder}` };
    const set = this.d.chain.set;
    // A follower's own key is outside the set; one inside is bound all the same, so the chain view
    // counts the node as the validator it is (FOLLOWER_IS_VALIDATOR, see roles.ts).
    if (set && row?.role !== 'follower' && !set.validators.some((v) => v.pubkey === pubkey)) {
      return { code: 'E_BINDING_UNKNOWN', message: `validator ${pubkey.slice(0, 16)}… is not in the chain's validator set of epoch ${set.epoch}` };
    }
    if (!row?.pubkey) this.d.writes.tx(() => this.d.store.bindNode(nodeId, pubkey));
    return null;
  }

  private onHello(ws: WebSocket, hello: Extract<AgentMessage, { type: 'hello' }>): void {
    const id = hello.nodeId;
    const now = this.d.now();
    if (!this.follower(id)) this.d.chain.observe(id, hello.status.chain, now);
    const prev = this.sockets.get(id);
    if (prev && prev !== ws) prev.close(4001, 'replaced by a newer connection');
    this.sockets.set(id, ws);
    this.links.set(id, { connected: true, status: hello.status, agentVersion: hello.agentVersion, lastSeenAt: now, connectedAt: now });
    // Urgent: the recent results must be committed before anything is decided or re-sent; the
    // scheduled tick commits them (with every other hello of this turn: one fsync for a reconnect storm).
    this.d.writes.queue(() => {
      this.persistStatus(id, hello.status, hello.agentVersion, now);
      this.d.store.appendEvent({
        at: now,
        actor: `agent:${id}`,
        type: 'agent.connected',
        nodeId: id,
        data: { agentVersion: hello.agentVersion, version: hello.status.nodeVersion, proto: hello.proto },
      });
      for (const r of hello.recentResults) this.onResult(id, r);
    }, true);
    ws.send(encode(coordinatorMessage('welcome', { heartbeatIntervalMs: this.d.heartbeatIntervalMs })));
    // Re-deliver every command still without a result, with the SAME id (the agent dedupes), once
    // the results above are committed: the loop asks for reconnected() after its flush.
    this.toRedeliver.add(id);
    this.d.notify('fleet');
  }

  private persistStatus(id: string, s: NodeStatus, agentVersion: string | null, now: number): void {
    this.d.store.updateNodeStatus(id, {
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

  // ------------------------------------------------------------ messages

  private onMessage(nodeId: string, msg: AgentMessage): void {
    if (this.stopped) return;
    const l = this.links.get(nodeId);
    if (!l) return;
    switch (msg.type) {
      case 'hello':
        return;
      case 'heartbeat':
        return this.onHeartbeat(nodeId, l, msg);
      case 'ack':
        return this.onAck(nodeId, msg);
      case 'progress':
        return this.onProgress(nodeId, msg);
      case 'result':
        // Urgent: committed (together with every other result of this event-loop turn) by the
        // scheduled tick before it decides anything. If we die before that commit, the agent
        // still has the result and sends it again in hello.recentResults.
        this.d.writes.queue(() => this.onResult(nodeId, msg), true);
        return;
    }
  }

  private onHeartbeat(nodeId: string, l: LiveNode, msg: Extract<AgentMessage, { type: 'heartbeat' }>): void {
    const now = this.d.now();
    const before = l.status;
    l.status = msg.status;
    l.lastSeenAt = now;
    if (!this.follower(nodeId)) this.d.chain.observe(nodeId, msg.status.chain, now);
    // Persist only what changes the picture, not every heartbeat. The row is a display copy
    // (decisions use the live status; a restarted coordinator waits for the hello), so it
    // rides with the next transaction instead of costing an fsync of its own.
    if (
      !before ||
      before.nodeVersion !== msg.status.nodeVersion ||
      before.isLeader !== msg.status.isLeader ||
      before.health !== msg.status.health ||
      before.ready !== msg.status.ready ||
      (before.busy?.commandId ?? null) !== (msg.status.busy?.commandId ?? null)
    ) {
      const status = msg.status;
      this.d.writes.queue(() => this.persistStatus(nodeId, status, null, now), false);
      // A node back up on the new version may finish its step: decide now, not at the next timer tick.
      this.d.wake();
    }
    this.d.notify('fleet');
  }

  private onAck(nodeId: string, msg: Extract<AgentMessage, { type: 'ack' }>): void {
    const now = this.d.now();
    const c = this.d.store.commandHead(msg.commandId);
    if (!c || c.nodeId !== nodeId || isCommandFinished(c.state)) return; // answered already: a late ack changes nothing
    if (msg.status === 'rejected') {
      // A rejection decides the step: urgent, committed before the next decision.
      this.d.writes.queue(() => {
        const cur = this.d.store.commandHead(c.id);
        if (!cur || !canCommandMove(cur.state, 'rejected')) return;
        this.d.store.setCommandState(c.id, 'rejected', now, { code: msg.code ?? 'E_INTERNAL', message: msg.message ?? null });
        this.d.audit.record('command.rejected', `agent:${nodeId}`, c.rolloutId, nodeId, { commandId: c.id, code: msg.code, message: msg.message });
      }, true);
    } else {
      // 'accepted'/'duplicate' are informational: the command stays open (re-sent on reconnect,
      // counted in flight) exactly as when it was 'sent', so losing this write changes nothing.
      const state = msg.status === 'duplicate' ? 'duplicate' : 'accepted';
      this.d.writes.queue(() => this.d.store.advanceCommandState(c.id, state, commandStatesInto(state), now), false);
    }
  }

  private onProgress(nodeId: string, msg: Extract<AgentMessage, { type: 'progress' }>): void {
    const now = this.d.now();
    const c = this.d.store.commandHead(msg.commandId);
    if (!c || c.nodeId !== nodeId) return;
    // Progress is informational (display and the event log); no decision reads it and a restarted
    // coordinator does not need it, so it is not worth an fsync per message: it is batched with the
    // next transaction (at most FLUSH_MS later). A kill -9 may lose the last FLUSH_MS of progress.
    this.d.writes.queue(() => {
      this.d.store.setProgressForCommand(msg.commandId, `${msg.step}:${msg.state}`, now);
      this.d.store.appendEvent({
        at: now,
        actor: `agent:${nodeId}`,
        type: 'node.progress',
        rolloutId: c.rolloutId,
        nodeId,
        data: { commandId: c.id, step: msg.step, state: msg.state, message: msg.message },
      });
    }, false);
    this.d.notify('progress', { nodeId, commandId: msg.commandId, step: msg.step, state: msg.state });
  }

  /** Records a command's result once (a re-sent result is ignored). Runs inside a transaction. */
  private onResult(nodeId: string, r: Result): void {
    const c = this.d.store.commandHead(r.commandId);
    if (!c || c.nodeId !== nodeId) {
      this.d.store.appendEvent({
        at: this.d.now(),
        actor: `agent:${nodeId}`,
        type: 'result.unknown',
        nodeId,
        data: { commandId: r.commandId, outcome: r.outcome },
      });
      return;
    }
    if (!canCommandMove(c.state, 'completed')) return;
    this.d.store.completeCommand(
      c.id,
      {
        outcome: r.outcome,
        code: r.code ?? null,
        message: r.message ?? null,
        runningVersion: r.runningVersion,
        downtimeMs: r.downtimeMs ?? null,
        stoppedAtView: r.stoppedAtView ?? null,
        result: r,
      },
      this.d.now(),
    );
    // Once per command: a re-sent result returned above, so a counter fed from this only grows by real results.
    this.d.notify('result', { nodeId, kind: c.kind, outcome: r.outcome, downtimeMs: r.downtimeMs ?? null } satisfies ResultEvent);
    this.d.audit.record('command.result', `agent:${nodeId}`, c.rolloutId, nodeId, {
      commandId: c.id,
      kind: c.kind,
      outcome: r.outcome,
      code: r.code,
      runningVersion: r.runningVersion,
      downtimeMs: r.downtimeMs,
      ...(r.migration ? { migration: r.migration } : {}),
    });
  }
}
