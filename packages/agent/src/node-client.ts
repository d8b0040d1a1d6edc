/**
 * Reads the node's own view of itself over its HTTP API: health, readiness,
 * consensus status, the chain (validator set, recent finalized blocks) and
 * Prometheus metrics. Every call has a timeout
 * and none throws: an unreachable node is a status, not an exception.
 */
import http from 'node:http';
import https from 'node:https';
import type { ChainReport, Health, NodeMetrics, NodeStatus } from '@guts-upgrade/protocol';
import { parseVersionOutput } from '@guts-upgrade/protocol';
import semver from 'semver';

export interface ConsensusStatus {
  enabled: boolean;
  state: string;
  view: number | null;
  finalized_height: number | null;
  current_leader: string | null;
  is_leader: boolean;
  pending_transactions?: number;
}

export interface HttpJson {
  status: number;
  body: unknown;
}

/** Most blocks a status carries (the protocol's cap). */
export const CHAIN_BLOCKS = 64;

/** Blocks the node serves at /api/consensus/blocks: its last ten (guts-node's interface). */
const NODE_BLOCK_WINDOW = 10;
/** The shortest pause between two reads of the latest blocks while following the chain. */
const FOLLOW_MIN_MS = 500;
/** While the block rate is not known, how soon following looks at it again. */
const FOLLOW_UNKNOWN_RECHECK_MS = 1000;
/** How much of the node's window may pass between two reads: reads take time and blocks come unevenly. */
const FOLLOW_WINDOW_SHARE = 0.6;

/** Most bytes one answer of the node may have (metrics pages are the largest, a few hundred KiB). */
const MAX_BODY_BYTES = 16 * 1024 * 1024;

export class NodeClient {
  /** The previous scrape, so heartbeats report latency over the last interval, not since start. */
  private lastScrape: MetricsSample | null = null;
  /** The node's recent finalized blocks, contiguous by height, oldest first, kept between reads. */
  private recent: ChainReport['blocks'] = [];
  /** Reads of the latest blocks, one at a time (each merges into `recent`). */
  private blockReads: Promise<unknown> = Promise.resolve();
  /** The highest block seen and when its height was first seen: the block rate follows from the next one. */
  private seenTop: { height: number; at: number } | null = null;
  /** Blocks per millisecond between the last two new tops (0: not known yet). */
  private blocksPerMs = 0;

  constructor(
    readonly apiUrl: string,
    readonly metricsUrl: string | null,
    readonly timeoutMs: number,
  ) {}

  /**
   * Keep-alive sockets (unreferenced while idle, so a CLI process still exits): a heartbeat's
   * five reads reuse connections rather than opening new ones. node:http rather than fetch:
   * the daemon reads its node every few seconds for its whole life, and fetch brings undici's
   * own stack (loaded at the first call, a few MiB of heap) and more CPU per request.
   */
  private readonly agents = { 'http:': new http.Agent({ keepAlive: true, maxSockets: 8 }), 'https:': new https.Agent({ keepAlive: true, maxSockets: 8 }) };

  /** Closes the kept-alive sockets. */
  close(): void {
    for (const a of Object.values(this.agents)) a.destroy();
  }

  async get(url: string): Promise<{ status: number; text: string } | null> {
    const first = await this.request(url);
    // The node may close an idle kept-alive socket just as it is reused: once more, on a new one.
    if (first === 'reused-socket-reset') {
      const again = await this.request(url);
      return again === 'reused-socket-reset' ? null : again;
    }
    return first;
  }

  /** One GET within timeoutMs (the whole exchange); null on any failure. */
  private request(url: string): Promise<{ status: number; text: string } | null | 'reused-socket-reset'> {
    return new Promise((resolve) => {
      let u: URL;
      try {
        u = new URL(url);
      } catch {
        resolve(null);
        return;
      }
      const mod = u.protocol === 'https:' ? https : u.protocol === 'http:' ? http : null;
      if (!mod) {
        resolve(null);
        return;
      }
      let settled = false;
      const done = (v: { status: number; text: string } | null | 'reused-socket-reset') => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(v);
      };
      const req = mod.get(u, { agent: this.agents[u.protocol as 'http:' | 'https:'] }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_BODY_BYTES) {
            req.destroy();
            done(null);
          } else chunks.push(c);
        });
        res.on('end', () => done({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', () => done(null));
      });
      const timer = setTimeout(() => {
        req.destroy();
        done(null);
      }, this.timeoutMs);
      req.on('error', (err: NodeJS.ErrnoException) => done(req.reusedSocket && err.code === 'ECONNRESET' ? 'reused-socket-reset' : null));
    });
  }

  async json(pathname: string): Promise<HttpJson | null> {
    const r = await this.get(this.apiUrl + pathname);
    if (!r) return null;
    try {
      return { status: r.status, body: JSON.parse(r.text) };
    } catch {
      return { status: r.status, body: null };
    }
  }

  async ready(): Promise<boolean> {
    const r = await this.get(`${this.apiUrl}/health/ready`);
    return r !== null && r.status === 200;
  }

  async health(): Promise<{ status: number; body: Record<string, unknown> | null } | null> {
    const r = await this.json('/health');
    if (!r) return null;
    return { status: r.status, body: r.body && typeof r.body === 'object' ? (r.body as Record<string, unknown>) : null };
  }

  async consensus(): Promise<ConsensusStatus | null> {
    const r = await this.json('/api/consensus/status');
    if (r?.status !== 200 || !r.body || typeof r.body !== 'object') return null;
    return r.body as ConsensusStatus;
  }

  /**
   * The chain as the node reports it (/api/consensus/validators and
   * /api/consensus/blocks), in the protocol's terms. A node without these
   * endpoints, or one that answers something malformed, reports no set and
   * no blocks: the coordinator then has nothing from this node to weigh.
   */
  async chain(): Promise<ChainReport> {
    const [v, blocks] = await Promise.all([this.json('/api/consensus/validators'), this.latestBlocks()]);
    return { validators: v && v.status === 200 ? validatorSetOf(v.body) : null, blocks };
  }

  /**
   * Reads the node's latest blocks into the run it keeps (recentBlocks); no blocks when the node
   * does not answer. One read at a time, the read inside: two reads merged out of order would look
   * like a chain that went back.
   */
  private latestBlocks(): Promise<ChainReport['blocks']> {
    const read = this.blockReads.then(async () => {
      const b = await this.json('/api/consensus/blocks');
      return b && b.status === 200 ? this.recentBlocks(blocksOf(b.body)) : [];
    });
    this.blockReads = read.catch(() => undefined);
    return read;
  }

  /**
   * Reads the latest blocks between heartbeats, just often enough that the chain does not run
   * past the ten the node serves before the next read: at five blocks a second and a 5 s
   * heartbeat, each heartbeat otherwise fetched 15 blocks one request at a time, half of the idle
   * agent's CPU (footprint bench: 0.43 % with them, 0.22 % without). The pause follows the block
   * rate the reads see, from FOLLOW_MIN_MS up; a chain slow enough for the heartbeat's own read
   * gets no extra read. Returns the function that stops it.
   */
  follow(heartbeatMs: number): () => void {
    let timer: NodeJS.Timeout | null = null;
    let stopped = false;
    const next = () => {
      if (stopped) return;
      const pause = followPause(this.blocksPerMs, heartbeatMs);
      // No read due: look again (a timer, no request) once the heartbeats may have measured the rate.
      const recheck = this.blocksPerMs > 0 ? heartbeatMs : Math.min(heartbeatMs, FOLLOW_UNKNOWN_RECHECK_MS);
      timer = setTimeout(() => {
        if (pause === null) return next();
        void this.latestBlocks().finally(next);
      }, pause ?? recheck);
      timer.unref();
    };
    next();
    return () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    };
  }

  /**
   * The node serves only its last 10 blocks: fewer views than a leader
   * rotation spans. So the agent keeps what it read before and fills a gap
   * below the latest ones from /api/consensus/blocks/{height} (all at once,
   * each within the HTTP timeout), reporting up to CHAIN_BLOCKS contiguous
   * blocks. A node whose chain went back or changed (a restore) starts over.
   */
  private async recentBlocks(latest: ChainReport['blocks']): Promise<ChainReport['blocks']> {
    if (latest.length === 0) return [];
    const top = latest[latest.length - 1]!.height;
    const byHeight = new Map<number, ChainReport['blocks'][number]>();
    const known = new Map(this.recent.map((x) => [x.height, x]));
    const consistent = (this.recent.at(-1)?.height ?? 0) <= top && latest.every((x) => !known.has(x.height) || known.get(x.height)!.blockId === x.blockId);
    if (consistent) for (const x of this.recent) byHeight.set(x.height, x);
    for (const x of latest) byHeight.set(x.height, x);
    const floor = Math.max(1, top - CHAIN_BLOCKS + 1);
    const missing: number[] = [];
    for (let h = top; h >= floor; h--) if (!byHeight.has(h)) missing.push(h);
    if (missing.length > 0) {
      const got = await Promise.all(missing.map((h) => this.json(`/api/consensus/blocks/${h}`)));
      for (const r of got) if (r && r.status === 200) for (const x of blocksOf([r.body])) byHeight.set(x.height, x);
    }
    const run: ChainReport['blocks'] = [];
    for (let h = top; h >= floor && byHeight.has(h); h--) run.push(byHeight.get(h)!);
    run.reverse();
    this.recent = run;
    this.noteTop(top, Date.now());
    return run;
  }

  /** The block rate from two successive new tops (a chain that went back starts the measure again). */
  private noteTop(top: number, now: number): void {
    const seen = this.seenTop;
    if (seen && top === seen.height) return;
    if (seen && top > seen.height && now > seen.at) this.blocksPerMs = (top - seen.height) / (now - seen.at);
    this.seenTop = { height: top, at: now };
  }

  async metricsText(): Promise<string | null> {
    if (!this.metricsUrl) return null;
    const r = await this.get(this.metricsUrl);
    return r && r.status === 200 ? r.text : null;
  }

  /** The version the running process reports: /health JSON, else guts_build_info. */
  async runningVersion(): Promise<string | null> {
    const h = await this.health();
    const v = h?.body?.version;
    if (typeof v === 'string' && semver.valid(v.replace(/^v/, ''))) return semver.valid(v.replace(/^v/, ''));
    const m = await this.metricsText();
    if (m) {
      const mm = /guts_build_info\{[^}]*version="([^"]+)"/.exec(m);
      if (mm && semver.valid(mm[1]!)) return semver.valid(mm[1]!);
    }
    return null;
  }

  /**
   * What the node says about its p2p connections, from the p2p component of
   * /health (several shapes tolerated). Only a figure the node gives is a
   * figure: `unknown` (today's guts-node, all its life), no p2p component or no
   * count is "not reported", never a number made up from something else.
   */
  async peers(): Promise<PeerReading> {
    const h = await this.health();
    if (!h) return { reported: false, status: null, reason: 'the node does not answer /health' };
    return peerReadingOf(h.body);
  }

  /** Connected peers when the node reports them, else null. */
  async peerCount(): Promise<number | null> {
    const r = await this.peers();
    return r.reported ? r.count : null;
  }

  /**
   * The node's request counters for the coordinator (canary soak), scraped
   * from /metrics with /health* excluded like the agent's own metrics check.
   * Undefined when there is no metrics endpoint or it does not answer.
   */
  async metricsStatus(): Promise<NodeMetrics | undefined> {
    const text = await this.metricsText();
    if (text === null) return undefined;
    const now = parseMetrics(text);
    const prev = this.lastScrape;
    this.lastScrape = now;
    // A counter that went down means the node restarted: the interval starts at zero.
    const base = prev && now.latencyCount >= prev.latencyCount && now.latencySum >= prev.latencySum ? prev : null;
    const cnt = now.latencyCount - (base?.latencyCount ?? 0);
    const sum = now.latencySum - (base?.latencySum ?? 0);
    return {
      requestsTotal: Math.max(0, Math.round(now.requests)),
      errorsTotal: Math.max(0, Math.round(now.errors)),
      latencyMs: cnt > 0 ? (sum / cnt) * 1000 : null,
      scrapedAt: new Date().toISOString(),
    };
  }

  async status(busy: NodeStatus['busy']): Promise<NodeStatus> {
    const [h, ready, cs, metrics, chain] = await Promise.all([this.health(), this.ready(), this.consensus(), this.metricsStatus(), this.chain()]);
    const p = h ? peerReadingOf(h.body) : null;
    const peers = p?.reported ? p.count : null;
    let health: Health = 'unknown';
    if (h) {
      const s = h.body?.status;
      health = s === 'up' || s === 'down' ? s : h.status === 200 ? 'up' : 'down';
    }
    const v = h?.body?.version;
    const version = typeof v === 'string' ? semver.valid(v.replace(/^v/, '')) : null;
    const int = (x: unknown) => (typeof x === 'number' && Number.isInteger(x) && x >= 0 ? x : null);
    return {
      nodeVersion: version,
      health,
      ready,
      isLeader: cs?.is_leader === true,
      currentLeader: typeof cs?.current_leader === 'string' ? cs.current_leader.slice(0, 128) : null,
      finalizedHeight: int(cs?.finalized_height),
      view: int(cs?.view),
      peerCount: int(peers),
      ...(metrics ? { metrics } : {}),
      chain,
      busy,
    };
  }
}

/**
 * The pause before the next read of the latest blocks while following: the time the chain takes
 * to produce FOLLOW_WINDOW_SHARE of the node's window, not under FOLLOW_MIN_MS; null when that is
 * a heartbeat or more (the heartbeat reads them) or the rate is not known yet.
 */
export function followPause(blocksPerMs: number, heartbeatMs: number): number | null {
  if (!(blocksPerMs > 0)) return null;
  const pause = (FOLLOW_WINDOW_SHARE * NODE_BLOCK_WINDOW) / blocksPerMs;
  return pause >= heartbeatMs ? null : Math.max(FOLLOW_MIN_MS, Math.round(pause));
}

const HEX = /^[0-9a-fA-F]{2,256}$/;
const count = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
const record = (x: unknown): Record<string, unknown> | null => (x && typeof x === 'object' && !Array.isArray(x) ? (x as Record<string, unknown>) : null);

/**
 * /api/consensus/validators in the protocol's terms, or null when it is not
 * a whole, well-formed set (a partial set would give a wrong quorum).
 */
export function validatorSetOf(body: unknown): ChainReport['validators'] {
  const o = record(body);
  if (!o || !count(o.epoch) || !count(o.total_weight) || !count(o.quorum_weight) || !Array.isArray(o.validators) || o.validators.length > 1024) return null;
  const validators: NonNullable<ChainReport['validators']>['validators'] = [];
  for (const raw of o.validators) {
    const v = record(raw);
    if (!v || typeof v.name !== 'string' || v.name.length > 128 || typeof v.pubkey !== 'string' || !HEX.test(v.pubkey) || !count(v.weight)) return null;
    validators.push({ name: v.name, pubkey: v.pubkey, weight: v.weight, active: v.active !== false });
  }
  return { epoch: o.epoch, totalWeight: o.total_weight, quorumWeight: o.quorum_weight, validators };
}

/** /api/consensus/blocks in the protocol's terms, oldest first, at most CHAIN_BLOCKS; malformed entries are left out. */
export function blocksOf(body: unknown): ChainReport['blocks'] {
  if (!Array.isArray(body)) return [];
  const out: ChainReport['blocks'] = [];
  for (const raw of body) {
    const b = record(raw);
    if (
      !b ||
      !count(b.height) ||
      typeof b.block_id !== 'string' ||
      b.block_id.length > 128 ||
      !count(b.view) ||
      typeof b.producer !== 'string' ||
      !HEX.test(b.producer)
    )
      continue;
    out.push({
      height: b.height,
      blockId: b.block_id,
      view: b.view,
      producer: b.producer,
      signatureCount: count(b.signature_count) ? b.signature_count : null,
    });
  }
  out.sort((a, b) => a.height - b.height);
  return out.slice(-CHAIN_BLOCKS);
}

/** A peers figure as the node reports it, or why there is none. */
export type PeerReading = { reported: true; status: 'up' | 'down'; count: number } | { reported: false; status: string | null; reason: string };

/** Reads the p2p component out of a /health body: { checks|components: { p2p } } or [{ name: 'p2p' }]. */
export function peerReadingOf(body: Record<string, unknown> | null): PeerReading {
  const obj = (o: unknown): Record<string, unknown> | null => (o && typeof o === 'object' && !Array.isArray(o) ? (o as Record<string, unknown>) : null);
  const comps = body ? (body.checks ?? body.components) : undefined;
  const p2p = Array.isArray(comps) ? obj(comps.find((c) => obj(c)?.name === 'p2p')) : obj(obj(comps)?.p2p);
  if (!p2p) return { reported: false, status: null, reason: 'no p2p component in /health' };
  const details = obj(p2p.details);
  const status = typeof p2p.status === 'string' ? p2p.status : null;
  let count: number | null = null;
  for (const src of [p2p, details]) {
    for (const k of ['peer_count', 'peers', 'connected_peers']) {
      const v = src?.[k];
      if (count === null && typeof v === 'number' && Number.isInteger(v) && v >= 0) count = v;
    }
  }
  const reason = typeof details?.reason === 'string' ? details.reason.slice(0, 200) : null;
  // A component that says it is down has measured its peers: none, unless it gives a count.
  if (status === 'down') return { reported: true, status: 'down', count: count ?? 0 };
  if (status === 'up' && count !== null) return { reported: true, status: 'up', count };
  if (status === 'up') return { reported: false, status, reason: 'p2p up without a peer count' };
  return { reported: false, status, reason: `p2p ${status ?? 'without a status'}${reason ? ` (${reason})` : ''}` };
}

export interface MetricsSample {
  requests: number;
  errors: number;
  latencySum: number;
  latencyCount: number;
}

/** Sums request counters (5xx as errors) and a latency histogram's _sum/_count from Prometheus text. */
export function parseMetrics(text: string): MetricsSample {
  const s: MetricsSample = { requests: 0, errors: 0, latencySum: 0, latencyCount: 0 };
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || !line.trim()) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eE]+|NaN|\+Inf)/.exec(line);
    if (!m) continue;
    const [, name, labels = '', val] = m;
    const v = Number(val);
    if (!Number.isFinite(v)) continue;
    // Health probes answer 503 by design while a node starts (our own polling): not errors.
    if (/"\/health/.test(labels)) continue;
    if (/^guts_.*requests_total$/.test(name!)) {
      s.requests += v;
      const st = /(?:status|code)="(\d+)"/.exec(labels);
      if (st && st[1]!.startsWith('5')) s.errors += v;
    } else if (/^guts_.*(duration|latency).*_sum$/.test(name!)) {
      s.latencySum += v;
    } else if (/^guts_.*(duration|latency).*_count$/.test(name!)) {
      s.latencyCount += v;
    }
  }
  return s;
}

export function versionFromOutput(out: string): string | null {
  return parseVersionOutput(out);
}
