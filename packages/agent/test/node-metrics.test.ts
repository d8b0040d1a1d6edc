import t from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { NodeClient } from '../src/node-client.js';

/** Prometheus text the way guts-node writes it; health probes included (they must not count). */
function text(api: { req: number; err: number; sum: number }, health = 1000): string {
  return `${[
    '# TYPE guts_http_requests counter',
    `guts_http_requests_total{method="GET",path="/api/repos",status="200"} ${api.req - api.err}`,
    `guts_http_requests_total{method="GET",path="/api/repos",status="500"} ${api.err}`,
    `guts_http_requests_total{method="GET",path="/health/ready",status="503"} ${health}`,
    `guts_http_request_duration_seconds_sum{method="GET",path="/api/repos",status="200"} ${api.sum}`,
    `guts_http_request_duration_seconds_count{method="GET",path="/api/repos",status="200"} ${api.req}`,
    `guts_http_request_duration_seconds_sum{method="GET",path="/health/ready",status="503"} 500`,
    `guts_http_request_duration_seconds_count{method="GET",path="/health/ready",status="503"} ${health}`,
  ].join('\n')}\n`;
}

t.test('heartbeat metrics: counters without /health*, latency over the last interval, restarts', async (t) => {
  let body = text({ req: 100, err: 5, sum: 0.2 });
  const server = http.createServer((_req, res) => res.end(body));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const c = new NodeClient(url, `${url}/metrics`, 2000);

  const a = await c.metricsStatus();
  t.match(a, { requestsTotal: 100, errorsTotal: 5 }, '503s of health probes are not errors');
  t.equal(Math.round(a!.latencyMs!), 2, 'first scrape: mean since start (0.2 s / 100)');
  t.match(a!.scrapedAt, /^\d{4}-\d{2}-\d{2}T.*Z$/);

  body = text({ req: 200, err: 5, sum: 1.2 }, 5000);
  const b = await c.metricsStatus();
  t.match(b, { requestsTotal: 200, errorsTotal: 5 });
  t.equal(Math.round(b!.latencyMs!), 10, 'second scrape: mean over the interval (1.0 s / 100)');

  body = text({ req: 200, err: 5, sum: 1.2 }, 9000);
  t.equal((await c.metricsStatus())!.latencyMs, null, 'no request in the interval: no latency');

  body = text({ req: 10, err: 1, sum: 0.05 });
  const d = await c.metricsStatus();
  t.match(d, { requestsTotal: 10, errorsTotal: 1 }, 'after a restart the counters start over');
  t.equal(Math.round(d!.latencyMs!), 5);

  t.equal(await new NodeClient(url, null, 2000).metricsStatus(), undefined, 'no metrics URL: no metrics');
  const status = await c.status(null);
  t.ok(status.metrics, 'the status sent in heartbeats carries them');
});
