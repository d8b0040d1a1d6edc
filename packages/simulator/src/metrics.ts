/** A tiny Prometheus text registry with the real node's `guts_` names. */

const BUCKETS = Array.from({ length: 16 }, (_, i) => 0.001 * 2 ** i);

function labels(l: Record<string, string | number>): string {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

interface Hist {
  labels: Record<string, string | number>;
  counts: number[];
  sum: number;
  count: number;
}

export class Metrics {
  private readonly requests = new Map<string, { labels: Record<string, string | number>; value: number }>();
  private readonly durations = new Map<string, Hist>();

  constructor(private readonly gauges: () => Record<string, { help: string; value: number; labels?: Record<string, string | number> }>) {}

  recordHttp(method: string, path: string, status: number, seconds: number): void {
    const l = { method, path: normalizePath(path), status };
    const key = JSON.stringify(l);
    const c = this.requests.get(key) ?? { labels: l, value: 0 };
    c.value++;
    this.requests.set(key, c);
    const h = this.durations.get(key) ?? { labels: l, counts: BUCKETS.map(() => 0), sum: 0, count: 0 };
    BUCKETS.forEach((b, i) => {
      if (seconds <= b) h.counts[i]!++;
    });
    h.sum += seconds;
    h.count++;
    this.durations.set(key, h);
  }

  render(): string {
    const out: string[] = [];
    for (const [name, g] of Object.entries(this.gauges())) {
      out.push(`# HELP ${name} ${g.help}`, `# TYPE ${name} gauge`, `${name}${labels(g.labels ?? {})} ${g.value}`);
    }
    out.push('# HELP guts_http_requests Total HTTP requests.', '# TYPE guts_http_requests counter');
    for (const c of this.requests.values()) out.push(`guts_http_requests_total${labels(c.labels)} ${c.value}`);
    out.push('# HELP guts_http_request_duration_seconds HTTP request duration in seconds.', '# TYPE guts_http_request_duration_seconds histogram');
    for (const h of this.durations.values()) {
      BUCKETS.forEach((b, i) => {
        out.push(`guts_http_request_duration_seconds_bucket${labels({ ...h.labels, le: b })} ${h.counts[i]}`);
      });
      out.push(`guts_http_request_duration_seconds_bucket${labels({ ...h.labels, le: '+Inf' })} ${h.count}`);
      out.push(`guts_http_request_duration_seconds_sum${labels(h.labels)} ${h.sum}`);
      out.push(`guts_http_request_duration_seconds_count${labels(h.labels)} ${h.count}`);
    }
    out.push('# EOF');
    return `${out.join('\n')}\n`;
  }
}

/** Numeric segments become :param so label cardinality stays bounded. */
export function normalizePath(p: string): string {
  return (p.split('?')[0] ?? '')
    .split('/')
    .map((s) => (/^\d+$/.test(s) ? ':param' : s))
    .join('/');
}

/** Parses Prometheus text into name{labels} → value (for tests and tools). */
export function parsePrometheus(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}
