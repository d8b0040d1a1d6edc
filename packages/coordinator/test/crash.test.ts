import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { api } from '../src/client.js';
import type { FleetBody, NodeRegisteredBody, RolloutDetailBody } from '../src/client.js';
import { MIGRATIONS, Store } from '../src/db.js';
import { waitFor } from '@guts-upgrade/simulator';
import { FakeAgent, type Shared } from './fake-agent.js';

const here = dirname(fileURLToPath(import.meta.url));
const serverCli = join(here, '..', 'src', 'server-cli.js');
const OP = 'operator-token-0123456789';

t.test('schema migrations are versioned and applied in order', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'guc-mig-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'm.db');
  const s1 = new Store(file);
  t.equal(s1.schemaVersion(), MIGRATIONS.at(-1)!.version);
  t.same(s1.migrate(), [], 'idempotent');
  s1.close();
  // a database created by version 1 only is upgraded in place
  const old = join(dir, 'old.db');
  const s0 = Object.create(Store.prototype) as Store;
  (s0 as { db: unknown }).db = new Database(old);
  t.same(s0.migrate(MIGRATIONS.slice(0, 1)), [1]);
  s0.db.prepare("INSERT INTO nodes (id, token_hash, created_at) VALUES ('v0', 'x', 1)").run();
  s0.close();
  const s2 = new Store(old);
  t.equal(s2.schemaVersion(), MIGRATIONS.at(-1)!.version, 'every later migration applied');
  t.equal(s2.activeNodes().length, 1, 'data kept');
  t.throws(
    () => s2.db.prepare('DELETE FROM events').run() && s2.appendEvent({ at: 1, actor: 'a', type: 't' }) && s2.db.prepare('UPDATE events SET type = ?').run('x'),
    /append-only/,
  );
  s2.db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, ?, 0)').run('future');
  s2.close();
  t.throws(() => new Store(old), /newer than this coordinator/);
});

t.test('the node cache a heartbeat updates in place reads the same as the database', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'guc-cache-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'c.db');
  const s = new Store(file);
  t.teardown(() => s.close());
  s.insertNode('v0', 'h0', null, 1);
  s.insertNode('v1', 'h1', null, 1);
  s.activeNodes(); // the cache is built
  const status = { version: '1.1.0', health: 'up', ready: true, isLeader: false, currentLeader: 'aa', finalizedHeight: 42, view: 7, peerCount: 3 } as const;
  s.updateNodeStatus('v1', { ...status, agentVersion: '0.9.0', busy: { commandId: 'c1', kind: 'upgrade', step: 'stop' }, lastSeenAt: 5 });
  s.updateNodeStatus('v1', { ...status, agentVersion: null, busy: null, lastSeenAt: 6 });
  s.updateNodeStatus('gone', { ...status, agentVersion: null, busy: null, lastSeenAt: 6 });
  const cached = s.activeNodes();
  const fresh = new Store(file);
  t.teardown(() => fresh.close());
  t.same(cached, fresh.activeNodes(), 'the same rows as a fresh read (agent version kept when none is sent)');
  t.equal(cached.find((n) => n.id === 'v1')?.agentVersion, '0.9.0');
  t.equal(cached.length, 2, 'an unknown node adds nothing');
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

t.test('kill -9 mid-rollout then restart on the same file resumes exactly', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'guc-crash-'));
  const port = await freePort();
  const cfg = join(dir, 'c.yaml');
  writeFileSync(
    cfg,
    [
      `listen: { host: 127.0.0.1, port: ${port} }`,
      `db: ${join(dir, 'c.db')}`,
      'operators: [{ name: ops, token: operator-token-0123456789, role: operator }]',
      'heartbeat: { intervalMs: 100, timeoutMs: 1500 }',
      'defaults: { stabilizationMs: 0, syncDistance: 3 }',
      'tickMs: 50',
      'logLevel: warn',
    ].join('\n'),
  );
  let proc: ChildProcess | null = null;
  const startProc = async () => {
    proc = spawn(process.execPath, [serverCli, '--config', cfg], { stdio: ['ignore', 'ignore', 'inherit'] });
    await waitFor(
      async () =>
        api({ url: `http://127.0.0.1:${port}` }, 'GET', '/health/ready').then(
          () => true,
          () => false,
        ),
      { what: 'coordinator up', timeoutMs: 20_000, intervalMs: 25 },
    );
  };
  const shared: Shared = { down: new Set(), maxDown: 0, height: 10, leader: 'v0' };
  const agents: FakeAgent[] = [];
  const heights = setInterval(() => shared.height++, 50);
  let reconnecting = true;
  t.teardown(() => {
    reconnecting = false;
    clearInterval(heights);
    for (const a of agents) a.close();
    proc?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  await startProc();
  const op = { url: `http://127.0.0.1:${port}`, token: OP };
  for (let i = 0; i < 7; i++) {
    const r = await api<NodeRegisteredBody>(op, 'POST', '/api/v1/nodes', { id: `v${i}` });
    const a = new FakeAgent(`ws://127.0.0.1:${port}`, `v${i}`, r.token, shared, '1.0.0', 40);
    agents.push(a);
    await a.connect();
  }
  // like the real agent: reconnect with backoff when the coordinator goes away
  const keepConnected = setInterval(() => {
    if (!reconnecting) return;
    for (const a of agents) if (!a.welcomed && (!a.ws || a.ws.readyState >= 2)) void a.connect();
  }, 150);
  t.teardown(() => clearInterval(keepConnected));
  await waitFor(async () => (await api<FleetBody>(op, 'GET', '/api/v1/fleet')).down.length === 0, { what: 'fleet healthy', timeoutMs: 20_000, intervalMs: 25 });

  // hold the commands of the first wave so the crash lands mid-step
  for (const a of agents) a.hold = true;
  const r = await api<RolloutDetailBody>(op, 'POST', '/api/v1/rollouts', {
    target: { version: '1.1.0', url: 'http://127.0.0.1:1/x.tgz', sha256: 'c'.repeat(64) },
    options: { maxUnavailable: 2 },
  });
  const id = r.rollout.id;
  await waitFor(() => agents.filter((a) => a.busy).length === 2, { what: 'two nodes in flight', timeoutMs: 20_000, intervalMs: 25 });
  proc!.kill('SIGKILL');
  await new Promise((res) => proc!.once('exit', res));
  // the agents finish while the coordinator is dead; results arrive via hello.recentResults
  for (const a of agents) a.release();
  await waitFor(() => agents.every((a) => !a.busy), { what: 'agents done', timeoutMs: 20_000, intervalMs: 25 });
  await startProc();
  const final = await waitFor(
    async () => {
      const d = await api<RolloutDetailBody>(op, 'GET', `/api/v1/rollouts/${id}`);
      return ['completed', 'failed', 'paused'].includes(d.rollout.state) ? d : null;
    },
    { what: 'rollout completes after restart', timeoutMs: 60_000, intervalMs: 25 },
  );
  t.equal(final.rollout.state, 'completed');
  t.ok(agents.every((a) => a.version === '1.1.0'));
  t.same(
    agents.map((a) => a.executed.length),
    [1, 1, 1, 1, 1, 1, 1],
    'no node upgraded twice',
  );
  t.ok(shared.maxDown <= 2, `f=2 never exceeded (saw ${shared.maxDown})`);
  t.ok(
    final.steps.every((s: { state: string }) => s.state === 'upgraded'),
    'no step skipped',
  );

  // second crash: right after a command is persisted and sent, before any ack
  for (const a of agents) a.hold = true;
  const r2 = await api<RolloutDetailBody>(op, 'POST', '/api/v1/rollouts', {
    target: { version: '1.2.0', url: 'http://127.0.0.1:1/y.tgz', sha256: 'd'.repeat(64) },
    options: { maxUnavailable: 2 },
  });
  await waitFor(() => agents.filter((a) => a.busy).length >= 1, { what: 'in flight', timeoutMs: 20_000, intervalMs: 25 });
  proc!.kill('SIGKILL');
  await new Promise((res) => proc!.once('exit', res));
  await startProc();
  // the coordinator re-sends the open commands with the same ids; the agent answers duplicate
  await waitFor(() => agents.some((a) => a.received.length > new Set(a.received).size), {
    what: 'a command re-delivered with the same id',
    timeoutMs: 20_000,
    intervalMs: 25,
  });
  for (const a of agents) a.hold = false;
  for (const a of agents) a.release();
  const final2 = await waitFor(
    async () => {
      const d = await api<RolloutDetailBody>(op, 'GET', `/api/v1/rollouts/${r2.rollout.id}`);
      return ['completed', 'failed', 'paused'].includes(d.rollout.state) ? d : null;
    },
    { what: 'second rollout completes', timeoutMs: 60_000, intervalMs: 25 },
  );
  t.equal(final2.rollout.state, 'completed');
  t.same(
    agents.map((a) => a.executed.length),
    [2, 2, 2, 2, 2, 2, 2],
    'still exactly once per node per rollout',
  );
  t.ok(shared.maxDown <= 2);
  proc!.kill('SIGTERM');
  await new Promise((res) => proc!.once('exit', res));
  proc = null;
});
