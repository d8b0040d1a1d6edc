import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { api } from '@guts-upgrade/coordinator';
import type { EventsBody, FleetBody, RolloutDetailBody } from '@guts-upgrade/coordinator';
import { NODE_LOG_LINES, type FailureEvidence } from '@guts-upgrade/protocol';
import { waitFor } from '@guts-upgrade/simulator';
import { makeRig, TOKEN } from './harness.js';

/** The operator CLI, run as installed: `guts-upgrade <args>` with the documented environment. */
async function guts(url: string, args: string[]): Promise<{ code: number; stdout: string }> {
  const cli = join(dirname(createRequire(import.meta.url).resolve('@guts-upgrade/coordinator/package.json')), 'dist/src/cli.js');
  const env: NodeJS.ProcessEnv = { ...process.env, GUTS_UPGRADE_URL: url, GUTS_UPGRADE_TOKEN: TOKEN };
  delete env.NODE_OPTIONS;
  return promisify(execFile)(process.execPath, [cli, ...args], { env }).then(
    (r) => ({ code: 0, stdout: r.stdout }),
    (e: { code: number; stdout: string }) => ({ code: e.code, stdout: e.stdout }),
  );
}

/** A webhook receiver on loopback: every body it was sent. */
async function hookReceiver(t: Tap): Promise<{ url: string; bodies: { type: string; nodeId: string | null; data: Record<string, unknown> }[] }> {
  const bodies: { type: string; nodeId: string | null; data: Record<string, unknown> }[] = [];
  const srv = createServer((req, res) => {
    let raw = '';
    req.on('data', (c: Buffer) => (raw += c.toString('utf8')));
    req.on('end', () => {
      bodies.push(JSON.parse(raw) as (typeof bodies)[number]);
      res.end('ok');
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}/hook`, bodies };
}
type Tap = { teardown(fn: () => unknown): void };

t.test('canary with a bad build: rollout stops, the canary is rolled back, nobody else touched', async (t) => {
  const hook = await hookReceiver(t);
  const rig = await makeRig(t, { n: 4, webhooks: [{ url: hook.url, secret: 'integration-hook-secret', events: ['node.failed'] }] });
  await rig.waitFleetReady();
  const r = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', {
    target: rig.fleet.artifact('1.1.0', 'exits'),
    strategy: 'canary',
    options: { canary: 'v2' },
  });
  const d = await rig.waitRollout(r.rollout.id);
  t.equal(d.rollout.state, 'failed');
  t.equal(d.rollout.code, 'E_CANARY_FAILED');
  t.same(
    d.steps.filter((s) => s.state !== 'pending').map((s) => s.nodeId),
    ['v2'],
  );
  const events = (await api<EventsBody>(rig.op, 'GET', `/api/v1/rollouts/${r.rollout.id}/events`)).events;
  const results = events.filter((e) => e.type === 'command.result');
  t.same(
    results.map((e) => [e.nodeId, e.data.kind, e.data.outcome, e.data.runningVersion]),
    [['v2', 'upgrade', 'rolled_back', '1.0.0']],
    'the canary agent rolled itself back; no other command ran',
  );
  t.equal(events.filter((e) => e.type === 'node.dispatched').length, 1, 'only the canary was dispatched');

  // The evidence travels: the node's own last words, from its agent to the API, the events, a webhook and the CLI.
  const PANIC = 'fatal: panicked during start-up (simulated bad build)';
  const ev = d.steps.find((s) => s.nodeId === 'v2')?.evidence;
  t.ok(ev && ev.nodeLog.length > 0 && ev.nodeLog.length <= NODE_LOG_LINES, `the step keeps the node's log (${ev?.nodeLog.length} lines)`);
  t.ok(
    ev?.nodeLog.some((l) => l.includes(PANIC)),
    "the node's panic line is in it",
  );
  const failed = events.find((e) => e.type === 'node.failed' && e.nodeId === 'v2');
  t.same((failed?.data.evidence as FailureEvidence | undefined)?.nodeLog, ev?.nodeLog, 'the node.failed event carries the same evidence');
  const hooked = await waitFor(() => hook.bodies.find((b) => b.type === 'node.failed' && b.nodeId === 'v2'), {
    what: 'the node.failed webhook',
    timeoutMs: 20_000,
  });
  t.ok(
    (hooked.data.evidence as FailureEvidence).nodeLog.some((l) => l.includes(PANIC)),
    'the webhook carries it',
  );
  const status = await guts(rig.url, ['rollout', 'status', r.rollout.id]);
  t.equal(status.code, 1, 'rollout status of a failed rollout exits 1');
  t.match(status.stdout, /v2 failed E_START: guts-node exited during start/, 'the CLI names the failure');
  t.match(status.stdout, /node log, last \d+ lines?:/, 'and shows the node log');
  t.ok(status.stdout.includes(`| `) && status.stdout.includes(PANIC), `with the panic line:\n${status.stdout}`);
  await waitFor(
    async () => {
      const f = await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet');
      return f.down.length === 0 && f.versions['1.0.0'] === 4;
    },
    { what: 'canary back on 1.0.0 and healthy', timeoutMs: 120_000, intervalMs: 200 },
  );
});

t.test('canary that degrades only after its agent verified it: the soak metrics catch it and the coordinator rolls it back', async (t) => {
  // The degrading build passes the agent's verification and then adds 300 ms
  // to every API request; health stays green, so only the soak's comparison
  // of the canary's latency with the nodes still on 1.0.0 can tell.
  const rig = await makeRig(t, { n: 4, timings: { degrade_after_ms: 8_000, degrade_latency_ms: 300 } });
  await rig.waitFleetReady();
  const r = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', {
    target: rig.fleet.artifact('1.1.0', 'degrades'),
    strategy: 'canary',
    options: { canary: 'v1', soakMs: 20_000, canaryLimits: { minRequests: 20 } },
  });
  const id = r.rollout.id;
  const d = await rig.waitRollout(id, ['rolled_back', 'failed', 'completed']);
  const events = (await api<EventsBody>(rig.op, 'GET', `/api/v1/rollouts/${id}/events`)).events;
  const results = events.filter((e) => e.type === 'command.result').map((e) => [e.nodeId, e.data.kind, e.data.outcome]);
  t.same(results[0], ['v1', 'upgrade', 'succeeded'], 'the agent verified the canary and reported success');
  t.ok(
    events.some((e) => e.type === 'canary.soaking' && e.nodeId === 'v1'),
    'the soak started',
  );
  t.equal(d.rollout.code, 'E_CANARY_FAILED');
  t.match(d.rollout.reason, /failed its soak: metrics: mean latency/, `judged on latency against the peers: ${d.rollout.reason}`);
  t.equal(d.rollout.state, 'rolled_back', 'the coordinator rolled the canary back');
  t.same(results.slice(1), [['v1', 'rollback', 'succeeded']], 'one rollback, on the canary only');
  t.same(
    events.filter((e) => e.type === 'node.dispatched').map((e) => [e.nodeId, e.data.command]),
    [
      ['v1', 'upgrade'],
      ['v1', 'rollback'],
    ],
    'no other node was touched',
  );
  await waitFor(
    async () => {
      const f = await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet');
      return f.down.length === 0 && f.versions['1.0.0'] === 4;
    },
    { what: 'canary back on 1.0.0 and healthy', timeoutMs: 120_000, intervalMs: 200 },
  );
});

t.test('a good canary passes a soak judged on its metrics, then the rest follow', async (t) => {
  const rig = await makeRig(t, { n: 4 });
  await rig.waitFleetReady();
  const r = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', {
    target: rig.fleet.artifact('1.1.0'),
    strategy: 'canary',
    options: { canary: 'v1', soakMs: 15_000, canaryLimits: { minRequests: 20 } },
  });
  const d = await rig.waitRollout(r.rollout.id, ['completed', 'failed', 'rolled_back', 'paused']);
  t.equal(d.rollout.state, 'completed', d.rollout.reason ?? '');
  const events = (await api<EventsBody>(rig.op, 'GET', `/api/v1/rollouts/${r.rollout.id}/events`)).events;
  const passed = events.find((e) => e.type === 'canary.passed');
  t.ok(passed, 'the soak passed');
  const metrics = passed?.data.metrics as { judged?: unknown; against?: unknown; detail?: unknown } | undefined;
  t.same([metrics?.judged, metrics?.against], [true, 'peers'], `judged against the peers on 1.0.0: ${metrics?.detail}`);
  const dispatched = events.filter((e) => e.type === 'node.dispatched').map((e) => e.nodeId);
  t.equal(dispatched[0], 'v1', 'the canary went first');
  t.equal(dispatched.length, 4, 'then the other three');
  await waitFor(async () => (await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet')).versions['1.1.0'] === 4, {
    what: 'all on 1.1.0',
    timeoutMs: 120_000,
    intervalMs: 200,
  });
});

t.test('pause, resume, abort and rollback with real agents', async (t) => {
  const rig = await makeRig(t, { n: 4 });
  await rig.waitFleetReady();
  const r = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', { target: rig.fleet.artifact('1.1.0'), options: { stabilizationMs: 1500 } });
  const id = r.rollout.id;
  await waitFor(async () => (await api<RolloutDetailBody>(rig.op, 'GET', `/api/v1/rollouts/${id}`)).steps.some((s) => s.state === 'upgraded'), {
    what: 'first node upgraded',
    timeoutMs: 120_000,
    intervalMs: 200,
  });
  t.equal((await api<RolloutDetailBody>(rig.op, 'POST', `/api/v1/rollouts/${id}/pause`, {})).rollout.state, 'paused');
  const upgraded = async () => (await api<RolloutDetailBody>(rig.op, 'GET', `/api/v1/rollouts/${id}`)).steps.filter((s) => s.state !== 'pending').length;
  const before = await upgraded();
  await new Promise((res) => setTimeout(res, 2500));
  t.equal(await upgraded(), before, 'nothing dispatched while paused');
  t.equal((await api<RolloutDetailBody>(rig.op, 'POST', `/api/v1/rollouts/${id}/resume`, {})).rollout.state, 'running');
  await waitFor(async () => (await upgraded()) > before, { what: 'progress after resume', timeoutMs: 120_000, intervalMs: 200 });
  t.equal((await api<RolloutDetailBody>(rig.op, 'POST', `/api/v1/rollouts/${id}/abort`, {})).rollout.state, 'aborted');
  t.equal((await api<RolloutDetailBody>(rig.op, 'POST', `/api/v1/rollouts/${id}/rollback`, {})).rollout.state, 'rolling_back');
  const d = await rig.waitRollout(id, ['rolled_back', 'failed']);
  t.equal(d.rollout.state, 'rolled_back', d.rollout.reason ?? '');
  await waitFor(
    async () => {
      const f = await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet');
      return f.down.length === 0 && f.versions['1.0.0'] === 4;
    },
    { what: 'all back on 1.0.0', timeoutMs: 120_000, intervalMs: 200 },
  );
});

t.test('a soak that judged nothing: a rollout that requires a judged soak rolls the canary back', async (t) => {
  // No node sees a million requests in a two-second soak: the metrics cannot judge the canary.
  const rig = await makeRig(t, { n: 4, canaryLimits: { minRequests: 1_000_000 } });
  await rig.waitFleetReady();
  const a = rig.fleet.artifact('1.1.0');
  const start = await guts(rig.url, [
    ...['rollout', 'start', '--to', a.version, '--artifact-url', a.url, '--sha256', a.sha256],
    ...['--strategy', 'canary', '--canary', 'v1', '--soak-ms', '2000', '--require-judged-soak'],
  ]);
  t.equal(start.code, 0, start.stdout);
  const id = /rollout (r\w+)/.exec(start.stdout)?.[1];
  if (!id) throw new Error(`no rollout id in: ${start.stdout}`);
  t.equal((await api<RolloutDetailBody>(rig.op, 'GET', `/api/v1/rollouts/${id}`)).rollout.options.requireJudgedSoak, true, 'the flag reached the rollout');
  const d = await rig.waitRollout(id, ['completed', 'failed', 'rolled_back', 'paused']);
  t.equal(d.rollout.state, 'rolled_back', d.rollout.reason ?? '');
  t.equal(d.rollout.code, 'E_CANARY_UNJUDGED');
  t.match(d.rollout.reason, /canary v1 failed its soak: its metrics judged nothing \(.*\) and the rollout requires a judged soak/);
  const events = (await api<EventsBody>(rig.op, 'GET', `/api/v1/rollouts/${id}/events`)).events;
  t.notOk(
    events.some((e) => e.type === 'canary.passed'),
    'no pass recorded',
  );
  t.same([...new Set(events.filter((e) => e.type === 'node.dispatched').map((e) => e.nodeId))], ['v1'], 'nobody but the canary was touched');
  await waitFor(async () => (await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet')).versions['1.0.0'] === 4, {
    what: 'the canary back on 1.0.0',
    timeoutMs: 120_000,
    intervalMs: 200,
  });
});
