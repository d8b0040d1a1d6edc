/**
 * A protocol-level stand-in for an agent, for the coordinator's own tests: a
 * real ws client that speaks the wire protocol, dedupes command ids like the
 * real agent and "upgrades" by changing the version it reports.
 */
import WebSocket from 'ws';
import {
  agentMessage,
  decodeCoordinatorMessage,
  encode,
  type ChainReport,
  type Command,
  type Hello,
  type NodeStatus,
  type Result,
} from '@guts-upgrade/protocol';

export interface Shared {
  /** Nodes currently "down" (executing an upgrade/rollback), across all fake agents. */
  down: Set<string>;
  maxDown: number;
  height: number;
  leader: string | null;
}

export class FakeAgent {
  ws: WebSocket | null = null;
  version: string;
  previous: string | null = null;
  executed: string[] = [];
  received: string[] = [];
  /** The commands as they arrived, duplicates included (to read what a command carried). */
  commands: Command[] = [];
  refused: { code: string; message: string } | null = null;
  welcomed = false;
  results = new Map<string, Result>();
  pendingResults: Result[] = [];
  busy: { commandId: string; kind: Command['kind']; step: null } | null = null;
  /** Hold commands until release() (to crash the coordinator mid-step). */
  hold = false;
  private held: Command[] = [];
  /** Fail upgrades to this version (agent rolls back itself). */
  failVersion: string | null = null;
  stopped = false;
  private hb: NodeJS.Timeout | null = null;
  private seq = 0;
  /** Extra hello fields, as a configured agent sends them (role, validatorPubkey). */
  helloExtra: Partial<Pick<Hello, 'role' | 'validatorPubkey'>> = {};
  /** The chain as this node reports it in every status, if it reports one. */
  chain: (() => ChainReport) | null = null;

  constructor(
    readonly url: string,
    readonly id: string,
    readonly token: string,
    readonly shared: Shared,
    version = '1.0.0',
    readonly workMs = 30,
  ) {
    this.version = version;
  }

  status(): NodeStatus {
    const down = this.shared.down.has(this.id);
    return {
      nodeVersion: this.version,
      health: down ? 'down' : 'up',
      ready: !down,
      isLeader: this.shared.leader === this.id && !down,
      currentLeader: this.shared.leader,
      finalizedHeight: this.shared.height,
      view: this.shared.height,
      peerCount: 3,
      busy: this.busy,
      ...(this.chain ? { chain: this.chain() } : {}),
    };
  }

  connect(proto = '1.0'): Promise<void> {
    return new Promise((resolve) => {
      const ws = new WebSocket(`${this.url}/agent`, { headers: { authorization: `Bearer ${this.token}`, 'x-guts-node-id': this.id } });
      this.ws = ws;
      ws.on('open', () => {
        const hello = agentMessage('hello', {
          nodeId: this.id,
          agentVersion: 'fake',
          ...this.helloExtra,
          status: this.status(),
          recentResults: this.pendingResults.splice(0),
        });
        ws.send(JSON.stringify({ ...hello, proto }));
      });
      ws.on('message', (raw: Buffer) => {
        const d = decodeCoordinatorMessage(raw);
        if (!d.ok) throw new Error(d.error);
        const m = d.message;
        if (m.type === 'welcome') {
          this.welcomed = true;
          this.hb = setInterval(() => this.heartbeat(), Math.min(m.heartbeatIntervalMs, 100));
          resolve();
        } else if (m.type === 'refused') {
          this.refused = { code: m.code, message: m.message };
          resolve();
        } else this.onCommand(m);
      });
      ws.on('close', () => {
        if (this.hb) clearInterval(this.hb);
        this.hb = null;
        this.welcomed = false;
        resolve();
      });
      ws.on('error', () => undefined);
    });
  }

  heartbeat(): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(encode(agentMessage('heartbeat', { nodeId: this.id, seq: this.seq++, status: this.status() })));
  }

  send(m: unknown): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(m));
    else if ((m as { type?: string }).type === 'result') this.pendingResults.push(m as Result);
  }

  private onCommand(c: Command): void {
    this.received.push(c.id);
    this.commands.push(c);
    const done = this.results.get(c.id);
    if (done || this.busy?.commandId === c.id) {
      this.send(agentMessage('ack', { commandId: c.id, status: 'duplicate' }));
      if (done) this.send(done);
      return;
    }
    if (this.busy) return this.send(agentMessage('ack', { commandId: c.id, status: 'rejected', code: 'E_BUSY' }));
    this.send(agentMessage('ack', { commandId: c.id, status: 'accepted' }));
    this.busy = { commandId: c.id, kind: c.kind, step: null };
    if (this.hold) this.held.push(c);
    else this.execute(c);
  }

  release(): void {
    this.hold = false;
    for (const c of this.held.splice(0)) this.execute(c);
  }

  private execute(c: Command): void {
    this.executed.push(c.id);
    const started = new Date().toISOString();
    const from = this.version;
    if (c.kind !== 'prepare') {
      this.shared.down.add(this.id);
      this.shared.maxDown = Math.max(this.shared.maxDown, this.shared.down.size);
    }
    setTimeout(() => {
      let outcome: Result['outcome'] = 'succeeded';
      let code: string | undefined;
      if (c.kind === 'upgrade') {
        if (this.failVersion === c.target.version) {
          outcome = 'rolled_back';
          code = 'E_START';
        } else {
          this.previous = this.version;
          this.version = c.target.version;
        }
      } else if (c.kind === 'rollback') {
        if (this.previous) this.version = this.previous;
      }
      this.shared.down.delete(this.id);
      this.busy = null;
      const result = agentMessage('result', {
        commandId: c.id,
        kind: c.kind,
        outcome,
        fromVersion: from,
        toVersion: c.kind === 'rollback' ? this.version : c.target.version,
        runningVersion: this.version,
        ...(code ? { code } : {}),
        downtimeMs: this.workMs,
        startedAt: started,
        finishedAt: new Date().toISOString(),
      });
      this.results.set(c.id, result);
      this.send(result);
      this.heartbeat();
    }, this.workMs);
  }

  close(): void {
    this.stopped = true;
    if (this.hb) clearInterval(this.hb);
    this.ws?.terminate();
  }
}
