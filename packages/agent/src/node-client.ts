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

export interface HttpJson { status: number; body: unknown }

export class NodeClient {
  /** The previous scrape, so heartbeats report latency over the last interval, not since start. */
  private lastScrape: MetricsSample | null = null;

  constructor(readonly apiUrl: string, readonly metricsUrl: string | null, readonly timeoutMs: number) {}

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
    const r = await this.get(this.apiUrl + '/health/ready');
    return r !== null && r.status === 200;
  }

  async health(): Promise<{ status: number; body: Record<string, unknown> | null } | null> {
    const r = await this.json('/health');
    if (!r) return null;
    return { status: r.status, body: r.body && typeof r.body === 'object' ? (r.body as Record<string, unknown>) : null };
  }

  async consensus(): Promise<ConsensusStatus | null> {
    const r = await this.json('/api/consensus/status');
    if (!r || r.status !== 200 || !r.body || typeof r.body !== 'object') return null;
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

  /** Peers connected, from the health p2p component (several shapes tolerated), else active validators - 1. */
  async peerCount(): Promise<number | null> {
    const h = await this.health();
    const body = h?.body;
    const fromObj = (o: unknown): number | null => {
      if (!o || typeof o !== 'object') return null;
      const r = o as Record<string, unknown>;
      for (const k of ['peer_count', 'peers', 'connected_peers']) if (typeof r[k] === 'number') return r[k] as number;
      if (r.details) return fromObj(r.details);
      return null;
    };
    if (body) {
      const comps = (body.components ?? body.checks) as unknown;
      if (comps && typeof comps === 'object') {
        if (Array.isArray(comps)) {
          for (const c of comps) if ((c as { name?: string }).name === 'p2p') { const n = fromObj(c); if (n !== null) return n; }
        } else {
          const n = fromObj((comps as Record<string, unknown>).p2p);
          if (n !== null) return n;
        }
      }
      const direct = fromObj(body);
      if (direct !== null) return direct;
    }
    const v = await this.json('/api/consensus/validators');
    const vals = (v?.body as { validators?: { active?: boolean }[] } | null)?.validators;
    if (Array.isArray(vals)) return Math.max(0, vals.filter((x) => x.active !== false).length - 1);
    return null;
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
    const [h, ready, cs, peers, metrics] = await Promise.all([this.health(), this.ready(), this.consensus(), this.peerCount(), this.metricsStatus()]);
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

export interface MetricsSample { requests: number; errors: number; latencySum: number; latencyCount: number }

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
