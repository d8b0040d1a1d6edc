import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import WebSocket from 'ws';
import { buildConfig } from '../src/config.js';
import { api, type ApiError } from '../src/client.js';
import type { EventsBody, FleetBody, NodeListBody, NodeRegisteredBody, PlanBody, RolloutDetailBody, RolloutListBody } from '../src/client.js';
import { startCoordinator } from '../src/server.js';
import { signBody, SIGNATURE_HEADER } from '../src/webhooks.js';
import { waitFor } from '@guts-upgrade/simulator';
import { FakeAgent, type Shared } from './fake-agent.js';

const OP = 'operator-token-0123456789';
const VIEW = 'viewer-token-0123456789';
const SHA = 'b'.repeat(64);
const target = { version: '1.1.0', url: 'http://127.0.0.1:1/a.tgz', sha256: SHA };

t.test('coordinator API, roles, agent auth, rollouts and webhooks', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'guc-srv-'));
  // webhook receiver: the first attempt of every delivery fails, so each is retried
  const hooks: { body: string; sig: string; event: string; delivery: string }[] = [];
  const attempts = new Map<string, number>();
  const receiver = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const delivery = String(req.headers['x-guts-upgrade-delivery']);
      const n = (attempts.get(delivery) ?? 0) + 1;
      attempts.set(delivery, n);
      if (n === 1) return res.writeHead(500).end();
      hooks.push({
        body: Buffer.concat(chunks).toString(),
        sig: String(req.headers[SIGNATURE_HEADER]),
        event: String(req.headers['x-guts-upgrade-event']),
        delivery,
      });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', () => r()));
  const hookPort = (receiver.address() as { port: number }).port;
  const config = buildConfig({
    listen: { host: '127.0.0.1', port: 0, socket: join(dir, 'api.sock') },
    db: join(dir, 'c.db'),
    operators: [
      { name: 'alice', token: OP, role: 'operator' },
      { name: 'bob', token: VIEW, role: 'viewer' },
    ],
    heartbeat: { intervalMs: 100, timeoutMs: 1000 },
    webhooks: [{ url: `http://127.0.0.1:${hookPort}/hook`, secret: 'shh' }],
    webhookRetry: { maxAttempts: 5, baseDelayMs: 20, timeoutMs: 2000 },
    defaults: { stabilizationMs: 0, syncDistance: 2, soakMs: 200 },
    tickMs: 50,
  });
  const c = await startCoordinator(config, { log: pino({ level: 'silent' }) });
  const agents: FakeAgent[] = [];
  t.teardown(async () => {
    for (const a of agents) a.close();
    await c.close();
    receiver.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const op = { url: c.url!, token: OP };
  const viewer = { url: c.url!, token: VIEW };
  const err = async (p: Promise<unknown>) => {
    try {
      await p;
    } catch (e) {
      return e as ApiError;
    }
    throw new Error('expected an error');
  };

  // ------------------------------------------------------------ roles
  t.equal((await err(api<NodeListBody>({ url: c.url! }, 'GET', '/api/v1/nodes'))).code, 'E_AUTH');
  t.equal((await err(api<NodeListBody>({ url: c.url!, token: 'nope-nope-nope-nope' }, 'GET', '/api/v1/nodes'))).status, 401);
  t.same((await api<NodeListBody>(viewer, 'GET', '/api/v1/nodes')).nodes, []);
  const forbidden = await err(api<NodeRegisteredBody>(viewer, 'POST', '/api/v1/nodes', { id: 'v0' }));
  t.equal(forbidden.status, 403);
  t.equal(forbidden.code, 'E_FORBIDDEN');
  t.equal((await api<{ status: string }>({ socket: join(dir, 'api.sock') }, 'GET', '/health/ready')).status, 'up', 'API over the unix socket');
  t.match(await api<string>({ url: c.url! }, 'GET', '/metrics'), /guts_upgrade_validators/);
  t.match(JSON.stringify(await api({ url: c.url! }, 'GET', '/docs/json')), /\/api\/v1\/rollouts\/plan/);

  // ------------------------------------------------------------ nodes
  const tokens: Record<string, string> = {};
  for (let i = 0; i < 4; i++) {
    const r = await api<NodeRegisteredBody>(op, 'POST', '/api/v1/nodes', { id: `v${i}` });
    t.match(r.token, /^gua_/);
    tokens[`v${i}`] = r.token;
  }
  t.equal((await err(api<NodeRegisteredBody>(op, 'POST', '/api/v1/nodes', { id: 'v0' }))).code, 'E_CONFLICT');

  // ------------------------------------------------------------ malformed bodies change nothing
  const eventsBefore = c.store.events().length;
  const bad: [string, string, unknown][] = [
    ['POST', '/api/v1/nodes', {}],
    ['POST', '/api/v1/nodes', { id: 'bad id!' }],
    ['POST', '/api/v1/nodes', { id: 'v9', extra: 1 }],
    ['POST', '/api/v1/nodes', { id: 7 }],
    ['POST', '/api/v1/rollouts', {}],
    ['POST', '/api/v1/rollouts', { target: { ...target, sha256: 'XYZ' } }],
    ['POST', '/api/v1/rollouts', { target: { ...target, version: 'one' } }],
    ['POST', '/api/v1/rollouts', { target: { ...target, url: 'ftp://x' } }],
    ['POST', '/api/v1/rollouts', { target: { ...target, extra: true } }],
    ['POST', '/api/v1/rollouts', { target, strategy: 'yolo' }],
    ['POST', '/api/v1/rollouts', { target, options: { maxUnavailable: 0 } }],
    ['POST', '/api/v1/rollouts', { target, options: { maxUnavailable: '1' } }],
    ['POST', '/api/v1/rollouts', { target, options: { bogus: 1 } }],
    ['POST', '/api/v1/rollouts', { target, options: { canaryLimits: { maxErrorRateIncrease: 2 } } }],
    ['POST', '/api/v1/rollouts', { target, options: { canaryLimits: { maxLatencyFactor: 0.5 } } }],
    ['POST', '/api/v1/rollouts', { target, options: { canaryLimits: { minRequests: 1.5 } } }],
    ['POST', '/api/v1/rollouts', { target, options: { canaryLimits: { typo: 1 } } }],
    ['POST', '/api/v1/rollouts', { target, nodes: [] }],
    ['POST', '/api/v1/rollouts', { target, nodes: ['v0', 'v0'] }],
    ['POST', '/api/v1/rollouts/plan', { target, options: { autoRollback: 'yes' } }],
    ['POST', '/api/v1/rollouts/plan', []],
  ];
  for (const [m, p, body] of bad) {
    const e = await err(api(op, m, p, body));
    t.equal(e.status, 400, `${p} ${JSON.stringify(body)} -> 400`);
    t.equal(e.code, 'E_BAD_MESSAGE');
    t.ok((e.body as { error: { field?: string } }).error.field, 'names the field');
  }
  const notJson = await new Promise<number | undefined>((resolve) => {
    const r = require_http().request(
      {
        host: '127.0.0.1',
        port: c.port!,
        method: 'POST',
        path: '/api/v1/rollouts',
        headers: { authorization: `Bearer ${OP}`, 'content-type': 'application/json' },
      },
      (res) => {
        res.resume();
        resolve(res.statusCode);
      },
    );
    r.end('{not json');
  });
  t.equal(notJson, 400, 'invalid JSON -> 400');
  t.equal((await api<NodeListBody>(op, 'GET', '/api/v1/nodes')).nodes.length, 4);
  t.equal((await api<RolloutListBody>(op, 'GET', '/api/v1/rollouts')).rollouts.length, 0);
  t.equal(c.store.events().length, eventsBefore, 'no event recorded by refused requests');
  t.equal((await err(api<RolloutDetailBody>(op, 'POST', '/api/v1/rollouts', { target, options: { maxUnavailable: 2 } }))).code, 'E_DISRUPTION_BUDGET');

  // ------------------------------------------------------------ agent auth over a real socket
  const wsUrl = c.url!.replace('http', 'ws');
  const shared: Shared = { down: new Set(), maxDown: 0, height: 10, leader: 'v0' };
  const badToken = new FakeAgent(wsUrl, 'v0', 'gua_wrong', shared);
  await badToken.connect();
  t.equal(badToken.refused?.code, 'E_AUTH');
  const unknown = new FakeAgent(wsUrl, 'v9', tokens.v0!, shared);
  await unknown.connect();
  t.equal(unknown.refused?.code, 'E_AUTH');
  const oldProto = new FakeAgent(wsUrl, 'v0', tokens.v0!, shared);
  await oldProto.connect('2.0');
  t.equal(oldProto.refused?.code, 'E_PROTOCOL_VERSION');
  const mismatch = await new Promise<string>((resolve) => {
    const ws = new WebSocket(`${wsUrl}/agent`, { headers: { authorization: `Bearer ${tokens.v0}`, 'x-guts-node-id': 'v0' } });
    ws.on('open', () => ws.send(JSON.stringify({ proto: '1.0', type: 'heartbeat', nodeId: 'v0', seq: 0, status: {} })));
    ws.on('message', (raw: Buffer) => resolve(JSON.parse(raw.toString()).code));
  });
  t.equal(mismatch, 'E_BAD_MESSAGE', 'a malformed first message is refused');

  for (let i = 0; i < 4; i++) {
    const a = new FakeAgent(wsUrl, `v${i}`, tokens[`v${i}`]!, shared);
    agents.push(a);
    await a.connect();
    t.ok(a.welcomed, `v${i} welcomed`);
  }
  await waitFor(async () => (await api<FleetBody>(op, 'GET', '/api/v1/fleet')).down.length === 0, { what: 'fleet healthy', timeoutMs: 20_000, intervalMs: 25 });
  t.equal(
    (await err(api<RolloutDetailBody>(op, 'POST', '/api/v1/rollouts', { target: { ...target, version: '3.0.0' }, strategy: 'halt' }))).status,
    400,
    'skipping a major is refused',
  );
  const heights = setInterval(() => shared.height++, 50);
  t.teardown(() => clearInterval(heights));

  // ------------------------------------------------------------ plan, rollout, conflicts
  const plan = (await api<PlanBody>(op, 'POST', '/api/v1/rollouts/plan', { target })).plan;
  t.equal(plan.waves.at(-1)?.[0], 'v0', 'leader last in the plan');
  t.equal((await api<RolloutListBody>(op, 'GET', '/api/v1/rollouts')).rollouts.length, 0, 'plan is a dry run');
  const created = await api<RolloutDetailBody>(op, 'POST', '/api/v1/rollouts', { target: { ...target, length: 4096 }, options: { stabilizationMs: 0 } });
  const id = created.rollout.id;
  t.equal(created.rollout.target.length, 4096, "the artifact's length is kept for the agents' commands");
  const conflict = await err(api<RolloutDetailBody>(op, 'POST', '/api/v1/rollouts', { target, nodes: ['v1'] }));
  t.equal(conflict.status, 409);
  t.equal(conflict.code, 'E_CONFLICT');
  t.equal((await err(api<RolloutDetailBody>(op, 'POST', `/api/v1/rollouts/${id}/resume`, {}))).code, 'E_INVALID_STATE');
  t.equal((await err(api(op, 'DELETE', '/api/v1/nodes/v1'))).code, 'E_CONFLICT', 'cannot remove a node in an active rollout');
  const done = await waitFor(
    async () => {
      const d = await api<RolloutDetailBody>(viewer, 'GET', `/api/v1/rollouts/${id}`);
      return ['completed', 'failed', 'paused'].includes(d.rollout.state) ? d : null;
    },
    { what: 'rollout completes', timeoutMs: 20_000, intervalMs: 25 },
  );
  t.equal(done.rollout.state, 'completed');
  t.ok(shared.maxDown <= 1, `never more than f=1 down (saw ${shared.maxDown})`);
  t.ok(agents.every((a) => a.version === '1.1.0'));
  t.ok(
    agents.every((a) => a.executed.length === 1),
    'every node upgraded exactly once',
  );
  const pauseDone = await err(api<RolloutDetailBody>(op, 'POST', `/api/v1/rollouts/${id}/pause`));
  t.equal(pauseDone.status, 409);
  t.equal(pauseDone.code, 'E_INVALID_STATE');
  const events = (await api<EventsBody>(viewer, 'GET', `/api/v1/rollouts/${id}/events`)).events;
  t.ok(
    events.some((e) => e.type === 'rollout.created' && e.actor === 'operator:alice'),
    'audit names the operator',
  );
  t.ok(events.some((e) => e.type === 'node.upgraded'));

  // ------------------------------------------------------------ canary failure with a bad build
  agents[1]!.failVersion = '1.2.0';
  const canary = await api<RolloutDetailBody>(op, 'POST', '/api/v1/rollouts', {
    target: { ...target, version: '1.2.0' },
    strategy: 'canary',
    options: { canary: 'v1' },
  });
  const cd = await waitFor(
    async () => {
      const d = await api<RolloutDetailBody>(op, 'GET', `/api/v1/rollouts/${canary.rollout.id}`);
      return ['completed', 'failed', 'paused', 'rolled_back'].includes(d.rollout.state) ? d : null;
    },
    { what: 'canary ends', timeoutMs: 20_000, intervalMs: 25 },
  );
  t.equal(cd.rollout.state, 'failed');
  t.equal(cd.rollout.code, 'E_CANARY_FAILED');
  t.ok(
    agents.filter((a) => a.id !== 'v1').every((a) => a.version === '1.1.0'),
    'no other node touched',
  );

  // ------------------------------------------------------------ pause / resume / abort
  const r3 = await api<RolloutDetailBody>(op, 'POST', '/api/v1/rollouts', { target: { ...target, version: '1.3.0' }, options: { stabilizationMs: 300 } });
  await waitFor(async () => agents.some((a) => a.version === '1.3.0'), { what: 'first node upgraded', timeoutMs: 20_000, intervalMs: 25 });
  const paused = await api<RolloutDetailBody>(op, 'POST', `/api/v1/rollouts/${r3.rollout.id}/pause`, { reason: 'looking' });
  t.equal(paused.rollout.state, 'paused');
  await new Promise((r) => setTimeout(r, 500));
  const count = agents.filter((a) => a.version === '1.3.0').length;
  await new Promise((r) => setTimeout(r, 400));
  t.equal(agents.filter((a) => a.version === '1.3.0').length, count, 'nothing dispatched while paused');
  // The paused rollout on /metrics: paused, its nodes by step state adding up to the rollout's nodes.
  const pausedMetrics = await api<string>({ url: c.url! }, 'GET', '/metrics');
  const r3id = r3.rollout.id;
  t.match(pausedMetrics, new RegExp(`^guts_upgrade_rollout_paused\\{rollout="${r3id}"\\} 1$`, 'm'), 'rollout_paused 1');
  t.match(pausedMetrics, new RegExp(`^guts_upgrade_rollout_info\\{rollout="${r3id}",state="paused",strategy="rolling",target="1\\.3\\.0"\\} 1$`, 'm'));
  const byState = [...pausedMetrics.matchAll(new RegExp(`^guts_upgrade_rollout_nodes\\{rollout="${r3id}",state="(\\w+)"\\} (\\d+)$`, 'gm'))];
  t.equal(
    byState.reduce((sum, m) => sum + Number(m[2]), 0),
    r3.rollout.nodes.length,
    'rollout_nodes adds up to the rollout',
  );
  t.ok(Number(byState.find((m) => m[1] === 'upgraded')?.[2]) >= 1, 'the upgraded node counted');
  t.equal((await api<RolloutDetailBody>(op, 'POST', `/api/v1/rollouts/${r3.rollout.id}/resume`)).rollout.state, 'running');
  await waitFor(async () => agents.filter((a) => a.version === '1.3.0').length > count, { what: 'progress after resume', timeoutMs: 20_000, intervalMs: 25 });
  t.equal((await api<RolloutDetailBody>(op, 'POST', `/api/v1/rollouts/${r3.rollout.id}/abort`)).rollout.state, 'aborted');
  t.equal((await api<RolloutDetailBody>(op, 'POST', `/api/v1/rollouts/${r3.rollout.id}/rollback`)).rollout.state, 'rolling_back');
  const rb = await waitFor(
    async () => {
      const d = await api<RolloutDetailBody>(op, 'GET', `/api/v1/rollouts/${r3.rollout.id}`);
      return ['rolled_back', 'failed'].includes(d.rollout.state) ? d : null;
    },
    { what: 'rolled back', timeoutMs: 20_000, intervalMs: 25 },
  );
  t.equal(rb.rollout.state, 'rolled_back');
  t.ok(
    agents.every((a) => a.version !== '1.3.0'),
    'every upgraded node rolled back',
  );
  t.ok(shared.maxDown <= 1);

  // ------------------------------------------------------------ webhooks: signed, retried
  await waitFor(() => hooks.some((h) => h.event === 'rollout.completed') && hooks.some((h) => h.event === 'rollout.rolled_back'), {
    what: 'webhooks delivered',
    timeoutMs: 20_000,
    intervalMs: 25,
  });
  for (const h of hooks) t.equal(h.sig, signBody('shh', h.body), `${h.event} signed`);
  t.ok(
    [...attempts.values()].every((n) => n >= 2),
    'every delivery was retried after a 500',
  );
  const types = new Set(hooks.map((h) => h.event));
  for (const e of ['rollout.started', 'node.upgraded', 'node.failed', 'rollout.paused', 'rollout.completed']) t.ok(types.has(e), `webhook ${e}`);
  // Every fleet gauge reads one fleet view per scrape (computing it per gauge made a 2,000-node scrape slow).
  const realWatch = c.coordinator.fleetWatch.bind(c.coordinator);
  let watches = 0;
  c.coordinator.fleetWatch = (now?: number) => {
    watches++;
    return realWatch(now);
  };
  const metrics = await api<string>({ url: c.url! }, 'GET', '/metrics');
  t.equal(watches, 1, 'one fleet view for the whole scrape');
  await api<string>({ url: c.url! }, 'GET', '/metrics');
  t.equal(watches, 2, 'and a fresh one for the next');
  c.coordinator.fleetWatch = realWatch;
  t.match(metrics, /guts_upgrade_version_skew \d/);
  // The results above, counted once each, and the downtime the fake agents reported, per node.
  const sample = (re: RegExp) => Number(re.exec(metrics)?.[1] ?? Number.NaN);
  t.ok(sample(/^guts_upgrade_command_results_total\{kind="upgrade",outcome="succeeded"\} (\d+)$/m) >= 1, 'upgrade results counted');
  t.match(metrics, /^guts_upgrade_command_results_total\{kind="prepare",outcome="failed"\} 0$/m, 'every kind and outcome listed from 0');
  t.ok(sample(/^guts_upgrade_node_downtime_seconds_count\{node="v\d"\} (\d+)$/m) >= 1, 'downtime observed per node');
  t.match(metrics, /^guts_upgrade_node_downtime_seconds_bucket\{le="\+Inf",node="v\d"\} \d+$/m);
  t.ok(sample(/^guts_upgrade_webhook_attempts_total\{outcome="retry"\} (\d+)$/m) >= 1, 'failed webhook attempts counted');
  t.match(metrics, /^guts_upgrade_build_info\{version="\d+\.\d+\.\d+",node="v\d+\.\d+\.\d+"\} 1$/m);
});

import { createRequire } from 'node:module';
function require_http(): typeof import('node:http') {
  return createRequire(import.meta.url)('node:http');
}
