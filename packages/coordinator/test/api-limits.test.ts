/**
 * Findings: an oversized body got 400 instead of 413; duplicate JSON keys were
 * accepted (the last won); a rollout to the version every node already runs
 * was created; nothing limited API requests. A real coordinator (SQLite file,
 * loopback port), real HTTP requests and real ws agents.
 */
import t from 'tap';
import { waitFor } from '@guts-upgrade/simulator';
import { api, type EventsBody, type FleetBody, type NodeListBody, type NodeRegisteredBody, type PlanBody, type RolloutListBody } from '../src/client.js';
import type { RunningCoordinator } from '../src/server.js';
import { FakeAgent, type Shared } from './fake-agent.js';
import { failure, liveCoordinator } from './live.js';

const OP = 'operator-token-0123456789';
const OTHER = 'other-operator-token-0123456789';
const SHA = 'b'.repeat(64);
const target = { version: '1.1.0', url: 'http://127.0.0.1:1/a.tgz', sha256: SHA };

function coordinator(t: { teardown: (fn: () => Promise<void>) => void }, limits?: unknown): Promise<RunningCoordinator> {
  return liveCoordinator(t, 'limits', {
    operators: [
      { name: 'alice', token: OP, role: 'operator' },
      { name: 'carol', token: OTHER, role: 'operator' },
    ],
    heartbeat: { intervalMs: 100, timeoutMs: 1000 },
    ...(limits ? { limits } : {}),
  });
}

/** A request with a body as written (not re-serialized), answering status, headers and JSON body. */
async function raw(c: RunningCoordinator, method: string, path: string, body: string | null, token: string | null = OP) {
  const res = await fetch(`${c.url}${path}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== null ? { 'content-type': 'application/json' } : {}) },
    ...(body !== null ? { body } : {}),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: (text ? JSON.parse(text) : null) as { error?: { code: string; message: string; field?: string } } };
}

t.test('bodies: too large is 413, a duplicate key is 400, and neither changes anything', async (t) => {
  const c = await coordinator(t);
  const op = { url: c.url!, token: OP };
  await api<NodeRegisteredBody>(op, 'POST', '/api/v1/nodes', { id: 'v0' });
  const before = (await api<EventsBody>(op, 'GET', '/api/v1/events?after=0')).events.length;

  const big = await raw(c, 'POST', '/api/v1/nodes', JSON.stringify({ id: 'v1', address: 'x'.repeat(300 * 1024) }));
  t.equal(big.status, 413, 'a body over 256 KiB is 413');
  t.match(big.body.error, { code: 'E_BODY_TOO_LARGE', field: 'body', message: /256 KiB/ });

  const dup = await raw(c, 'POST', '/api/v1/nodes', '{"id":"v1","id":"v2"}');
  t.equal(dup.status, 400);
  t.match(dup.body.error, { code: 'E_DUPLICATE_KEY', field: 'body.id', message: /body\.id is given twice/ });
  const nested = await raw(c, 'POST', '/api/v1/rollouts', JSON.stringify({ target }).replace('"version":"1.1.0"', '"version":"1.1.0","version":"1.0.0"'));
  t.equal(nested.status, 400);
  t.match(nested.body.error, { code: 'E_DUPLICATE_KEY', field: 'body.target.version' }, 'a duplicate inside a nested object is named by its path');
  const escaped = await raw(c, 'POST', '/api/v1/nodes', '{"id":"v1","\\u0069d":"v2"}');
  t.match(escaped.body.error, { code: 'E_DUPLICATE_KEY', field: 'body.id' }, 'the same key spelt with an escape');
  t.equal((await raw(c, 'POST', '/api/v1/nodes', '{"id":"v1"}')).status, 201, 'the same body with each key once is fine');

  t.same(
    (await api<NodeListBody>(op, 'GET', '/api/v1/nodes')).nodes.map((n) => n.id),
    ['v0', 'v1'],
    'only the well-formed request registered a node',
  );
  const after = (await api<EventsBody>(op, 'GET', '/api/v1/events?after=0')).events;
  t.same(
    after.slice(before).map((e) => [e.type, e.nodeId]),
    [['node.registered', 'v1']],
    'the refused bodies recorded nothing',
  );
});

t.test('a rollout to the version every targeted node runs is refused, nothing created', async (t) => {
  const c = await coordinator(t);
  const op = { url: c.url!, token: OP };
  const wsUrl = c.url!.replace('http', 'ws');
  const shared: Shared = { down: new Set(), maxDown: 0, height: 10, leader: 'v0' };
  const agents: FakeAgent[] = [];
  t.teardown(async () => {
    for (const a of agents) a.close();
  });
  for (let i = 0; i < 4; i++) {
    const { token } = await api<NodeRegisteredBody>(op, 'POST', '/api/v1/nodes', { id: `v${i}` });
    const a = new FakeAgent(wsUrl, `v${i}`, token, shared, i === 3 ? '1.1.0' : '1.0.0');
    agents.push(a);
    await a.connect();
  }
  await waitFor(async () => (await api<FleetBody>(op, 'GET', '/api/v1/fleet')).nodes.every((n) => n.version && n.healthy), {
    what: 'every node reports its version',
    timeoutMs: 10_000,
    intervalMs: 50,
  });
  const before = (await api<EventsBody>(op, 'GET', '/api/v1/events?after=0')).events.length;

  const cases: [string, unknown][] = [
    ['every node already on 1.0.0 (v3 runs 1.1.0)', { target: { ...target, version: '1.0.0' }, nodes: ['v0', 'v1', 'v2'] }],
    ['the one node named already on 1.1.0', { target, nodes: ['v3'] }],
  ];
  for (const [what, body] of cases) {
    for (const path of ['/api/v1/rollouts', '/api/v1/rollouts/plan']) {
      const e = await failure(api(op, 'POST', path, body));
      t.equal(e.status, 409, `${path}: ${what} -> 409`);
      t.equal(e.code, 'E_ALREADY_AT_TARGET');
      t.match(e.message, /already run/);
    }
  }
  t.same((await api<RolloutListBody>(op, 'GET', '/api/v1/rollouts')).rollouts, [], 'no rollout created');
  t.equal((await api<EventsBody>(op, 'GET', '/api/v1/events?after=0')).events.length, before, 'nothing recorded');
  // A node already at the target among others still to upgrade is skipped, as before.
  const plan = (await api<PlanBody>(op, 'POST', '/api/v1/rollouts/plan', { target })).plan;
  t.same(plan.skip, ['v3'], 'v3 skipped in a rollout that has work to do');
});

t.test('API rate limit: 429 for one token past its limit while another token passes', async (t) => {
  const MAX = 10;
  const c = await coordinator(t, { api: { max: MAX, windowMs: '1h' } });
  const carol = { url: c.url!, token: OTHER };
  const alice = { url: c.url!, token: OP };
  for (let i = 0; i < MAX; i++) await api<NodeListBody>(carol, 'GET', '/api/v1/nodes');
  const limited = await raw(c, 'GET', '/api/v1/nodes', null, OTHER);
  t.equal(limited.status, 429, `request ${MAX + 1} of one token is 429`);
  t.match(limited.body.error, { code: 'E_RATE_LIMITED', message: new RegExp(`more than ${MAX} requests in 3600 s`) });
  t.ok(Number(limited.headers.get('retry-after')) > 0, `Retry-After: ${limited.headers.get('retry-after')}`);
  t.equal((await failure(api(carol, 'POST', '/api/v1/nodes', { id: 'v9' }))).code, 'E_RATE_LIMITED', 'a change is refused too');

  t.same((await api<NodeListBody>(alice, 'GET', '/api/v1/nodes')).nodes, [], 'another token still passes');
  t.equal((await api<NodeRegisteredBody>(alice, 'POST', '/api/v1/nodes', { id: 'v0' })).id, 'v0');
  t.same(
    (await api<NodeListBody>(alice, 'GET', '/api/v1/nodes')).nodes.map((n) => n.id),
    ['v0'],
    'the refused change by the limited token did nothing',
  );

  // Without a known token, requests count against the client address: guessing tokens runs out too.
  const statuses: number[] = [];
  for (let i = 0; i <= MAX; i++) statuses.push((await raw(c, 'GET', '/api/v1/nodes', null, `guess-${i}-0123456789`)).status);
  t.same(statuses, [...Array<number>(MAX).fill(401), 429], 'unknown tokens: 401 until the address is out of requests, then 429');
  t.equal((await raw(c, 'GET', '/health/ready', null, null)).status, 200, 'health probes are never limited');
  t.equal((await raw(c, 'GET', '/api/v1/nodes', null, OP)).status, 200, 'an operator from the same address still passes');

  const metrics = await api<string>(alice, 'GET', '/metrics');
  t.match(metrics, /^guts_upgrade_api_rate_limited_total\{client="operator"\} 2$/m, "the token's refusals counted");
  t.match(metrics, /^guts_upgrade_api_rate_limited_total\{client="address"\} 1$/m, "the address's refusal counted");
});
