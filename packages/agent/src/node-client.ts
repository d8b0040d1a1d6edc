/**
 * Reads the node's own view of itself over its HTTP API: health, readiness,
 * consensus status, validators and Prometheus metrics. Every call has a timeout
 * and none throws: an unreachable node is a status, not an exception.
 */
import type { Health, NodeMetrics, NodeStatus } from '@guts-upgrade/protocol';
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

export class NodeClient {
  /** The previous scrape, so heartbeats report latency over the last interval, not since start. */
  private lastScrape: MetricsSample | null = null;

  constructor(
    readonly apiUrl: string,
    readonly metricsUrl: string | null,
    readonly timeoutMs: number,
  ) {}

  async get(url: string): Promise<{ status: number; text: string } | null> {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(this.timeoutMs) });
      return { status: res.status, text: await res.text() };
    } catch {
      return null;
    }
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
    const [h, ready, cs, metrics] = await Promise.all([this.health(), this.ready(), this.consensus(), this.metricsStatus()]);
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
      busy,
    };
  }
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
