/**
 * The link to the coordinator: dial <url>/agent with bearer token and node id
 * headers, hello -> welcome|refused, heartbeats, commands -> ack/progress/result.
 * Reconnects with jittered exponential backoff. Commands run independently of
 * the socket: a command in flight finishes (or rolls back) on its own, and its
 * result reaches the coordinator through hello.recentResults on reconnect.
 */
import { rootCertificates } from 'node:tls';
import WebSocket from 'ws';
import type { Logger } from 'pino';
import { agentMessage, decodeCoordinatorMessage, encode, PROTOCOL_VERSION, type AgentMessage, type Command, type Result } from '@guts-upgrade/protocol';
import { AGENT_VERSION, type Agent } from './agent.js';
import { sleep } from './util.js';

export interface ConnectionOptions {
  url: string;
  token: string;
  nodeId: string;
  /** The chain validator this node runs as (hex public key), sent in hello. */
  validatorPubkey?: string | null;
  /** The node's role from the agent's config, sent in hello (the coordinator checks it against the registration). */
  role?: 'validator' | 'follower';
  reconnectMaxMs: number;
  /** PEM of a private CA trusted, besides the system's, for a wss:// coordinator. */
  ca?: string | null;
  /** First reconnect delay. */
  reconnectBaseMs?: number;
}

export class Connection {
  private ws: WebSocket | null = null;
  private stopped = false;
  private heartbeat: NodeJS.Timeout | null = null;
  /** Stops reading the node's blocks between heartbeats (NodeClient.follow), while welcomed. */
  private unfollow: (() => void) | null = null;
  private seq = 0;
  private attempt = 0;
  private welcomed = false;
  private unlisten: (() => void) | null = null;

  constructor(
    private readonly agent: Agent,
    private readonly opts: ConnectionOptions,
    private readonly log: Logger,
  ) {}

  get connected(): boolean {
    return this.welcomed && this.ws?.readyState === WebSocket.OPEN;
  }

  /** Runs until stop(): connect, serve, back off, reconnect. */
  async run(): Promise<void> {
    this.unlisten = this.agent.addListener({
      progress: (ev) => this.send(agentMessage('progress', ev)),
    });
    while (!this.stopped) {
      let refusedCode: string | null = null;
      try {
        refusedCode = await this.once();
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'coordinator connection failed');
      }
      if (this.stopped) break;
      if (this.welcomed) this.attempt = 0;
      const base = this.opts.reconnectBaseMs ?? 500;
      // A refusal (bad token, protocol) will not fix itself quickly: back off to the max.
      const ceiling = refusedCode ? this.opts.reconnectMaxMs : Math.min(this.opts.reconnectMaxMs, base * 2 ** this.attempt);
      const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
      this.attempt++;
      this.log.info({ delayMs: delay, refused: refusedCode }, 'reconnecting to the coordinator');
      await sleep(delay);
    }
  }

  stop(): void {
    this.stopped = true;
    this.unlisten?.();
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.unfollow?.();
    this.ws?.close(1001, 'agent stopping');
  }

  private send(m: AgentMessage): void {
    if (this.ws?.readyState === WebSocket.OPEN && this.welcomed) this.ws.send(encode(m));
  }

  /** One connection; resolves when it closes, with the refusal code if refused. */
  private once(): Promise<string | null> {
    return new Promise((resolve, reject) => {
      this.welcomed = false;
      const ws = new WebSocket(`${this.opts.url}/agent`, {
        headers: { authorization: `Bearer ${this.opts.token}`, 'x-guts-node-id': this.opts.nodeId },
        handshakeTimeout: 10_000,
        maxPayload: 1024 * 1024,
        // Small JSON frames, and a coordinator that never accepts the extension: offering it only
        // costs a zlib context per connection when a server does.
        perMessageDeflate: false,
        // `ca` replaces Node's trust store, so the system's roots go along with the private CA.
        ...(this.opts.ca ? { ca: [...rootCertificates, this.opts.ca] } : {}),
      });
      this.ws = ws;
      let refused: string | null = null;
      let opened = false;
      ws.on('open', () => {
        opened = true;
        void this.hello(ws);
      });
      ws.on(
        'message',
        (raw) =>
          void this.onMessage(ws, raw as Buffer, (code) => {
            refused = code;
          }),
      );
      ws.on('unexpected-response', (_req, res) => {
        reject(new Error(`coordinator answered HTTP ${res.statusCode} to the upgrade`));
        ws.terminate();
      });
      ws.on('error', (err) => {
        if (!opened) reject(err);
        else this.log.warn({ err: err.message }, 'websocket error');
      });
      ws.on('close', (code, reason) => {
        if (this.heartbeat) clearInterval(this.heartbeat);
        this.heartbeat = null;
        this.unfollow?.();
        this.unfollow = null;
        this.welcomed = false;
        this.log.info({ code, reason: reason.toString() }, 'coordinator connection closed');
        resolve(refused);
      });
    });
  }

  private async hello(ws: WebSocket): Promise<void> {
    try {
      const status = await this.agent.status();
      const recentResults = this.agent.journal.recentResults(20);
      if (this.stopped || ws.readyState !== WebSocket.OPEN) return;
      ws.send(
        encode(
          agentMessage('hello', {
            nodeId: this.opts.nodeId,
            agentVersion: AGENT_VERSION,
            ...(this.opts.validatorPubkey ? { validatorPubkey: this.opts.validatorPubkey } : {}),
            ...(this.opts.role ? { role: this.opts.role } : {}),
            status,
            recentResults,
          }),
        ),
      );
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'cannot send hello');
      ws.close(1011, 'hello failed');
    }
  }

  private async onMessage(ws: WebSocket, raw: Buffer, setRefused: (code: string) => void): Promise<void> {
    const decoded = decodeCoordinatorMessage(raw);
    if (!decoded.ok) {
      this.log.warn({ code: decoded.code, error: decoded.error }, 'invalid message from the coordinator');
      // An invalid command still gets a rejection when its id can be read.
      const id = (() => {
        try {
          return JSON.parse(raw.toString()) as { type?: string; id?: unknown };
        } catch {
          return null;
        }
      })();
      if (id?.type === 'command' && typeof id.id === 'string' && /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/.test(id.id)) {
        ws.send(encode(agentMessage('ack', { commandId: id.id, status: 'rejected', code: decoded.code, message: decoded.error.slice(0, 4000) })));
      }
      return;
    }
    const m = decoded.message;
    switch (m.type) {
      case 'welcome': {
        this.welcomed = true;
        this.attempt = 0;
        this.log.info({ heartbeatIntervalMs: m.heartbeatIntervalMs, proto: PROTOCOL_VERSION }, 'welcomed by the coordinator');
        if (this.heartbeat) clearInterval(this.heartbeat);
        this.heartbeat = setInterval(() => void this.beat(ws), m.heartbeatIntervalMs);
        this.unfollow?.();
        this.unfollow = this.agent.node.follow(m.heartbeatIntervalMs);
        return;
      }
      case 'refused':
        this.log.error({ code: m.code, message: m.message }, 'the coordinator refused this agent');
        setRefused(m.code);
        ws.close(1000, 'refused');
        return;
      case 'command':
        await this.onCommand(m);
        return;
    }
  }

  private async beat(ws: WebSocket): Promise<void> {
    if (ws.readyState !== WebSocket.OPEN || this.stopped) return;
    try {
      const status = await this.agent.status();
      this.send(agentMessage('heartbeat', { nodeId: this.opts.nodeId, seq: this.seq++, status }));
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'heartbeat failed');
    }
  }

  private async onCommand(cmd: Command): Promise<void> {
    const sub = await this.agent.submit(cmd);
    // The coordinator moves on only once a status shows the node synced on its
    // new version; a heartbeat right behind the result saves it waiting a full
    // heartbeat interval per wave.
    const sendResult = (r: Result) => {
      this.send(r);
      if (this.ws) void this.beat(this.ws);
    };
    if (sub.ack === 'rejected') {
      this.log.warn({ commandId: cmd.id, code: sub.code }, 'command rejected');
      this.send(agentMessage('ack', { commandId: cmd.id, status: 'rejected', code: sub.code, message: sub.message.slice(0, 4000) }));
      return;
    }
    if (sub.ack === 'duplicate') {
      this.send(agentMessage('ack', { commandId: cmd.id, status: 'duplicate' }));
      if (sub.result) sendResult(sub.result);
      else if (sub.done) void sub.done.then(sendResult);
      return;
    }
    this.send(agentMessage('ack', { commandId: cmd.id, status: 'accepted' }));
    // If the socket is gone when it finishes, the result goes out in the next hello.
    void sub.done.then(sendResult, (err: Error) => this.log.error({ err: err.message }, 'command crashed'));
  }
}
