/**
 * A rollout's target is a version: agents resolve it through their signed release repository, so
 * the API and the CLI take it alone, and the commands carry only what the operator gave. url and
 * sha256 (for agents without a release repository) come together or not at all. Against a real
 * coordinator (SQLite file, loopback port) and protocol-level fake agents.
 */
import t from 'tap';
import { waitFor } from '@guts-upgrade/simulator';
import { EXIT } from '../src/cli.js';
import { api } from '../src/client.js';
import type { FleetBody, NodeRegisteredBody, RolloutDetailBody, RolloutListBody } from '../src/client.js';
import { FakeAgent, type Shared } from './fake-agent.js';
import { failure, liveCoordinator } from './live.js';
import { cli } from './run-cli.js';

const OP = 'operator-token-0123456789';
const SHA = 'c'.repeat(64);
const ART_URL = 'http://127.0.0.1:9/guts-node';

t.test('a bare version is taken, stored and sent as it is; url and sha256 only together', async (t) => {
  const c = await liveCoordinator(t, 'target', {
    operators: [{ name: 'alice', token: OP, role: 'operator' }],
    heartbeat: { intervalMs: 100, timeoutMs: 1000 },
    defaults: { stabilizationMs: 0, syncDistance: 2 },
    tickMs: 50,
  });
  const agents: FakeAgent[] = [];
  const shared: Shared = { down: new Set(), maxDown: 0, height: 10, leader: 'v0' };
  const heights = setInterval(() => shared.height++, 50);
  t.teardown(async () => {
    clearInterval(heights);
    for (const a of agents) a.close();
  });
  const op = { url: c.url!, token: OP };
  const run = (...argv: string[]) => cli(['--url', c.url!, '--token', OP, ...argv]);
  for (let i = 0; i < 4; i++) {
    const { token } = await api<NodeRegisteredBody>(op, 'POST', '/api/v1/nodes', { id: `v${i}` });
    const a = new FakeAgent(c.url!.replace('http', 'ws'), `v${i}`, token, shared);
    agents.push(a);
    await a.connect();
  }
  await waitFor(async () => (await api<FleetBody>(op, 'GET', '/api/v1/fleet')).down.length === 0, { what: 'fleet healthy', timeoutMs: 20_000, intervalMs: 25 });

  const completed = (id: string) =>
    waitFor(
      async () => {
        const d = await api<RolloutDetailBody>(op, 'GET', `/api/v1/rollouts/${id}`);
        return ['completed', 'failed', 'paused'].includes(d.rollout.state) ? d : null;
      },
      { what: `rollout ${id} ends`, timeoutMs: 20_000, intervalMs: 25 },
    );
  /** The targets of the upgrade commands the agents received for one version, once per command id (a re-send is the same command). */
  const sent = (version: string) => {
    const byId = new Map(
      agents.flatMap((a) => a.commands.flatMap((cmd) => (cmd.kind === 'upgrade' && cmd.target.version === version ? [[cmd.id, cmd.target] as const] : []))),
    );
    return [...byId.values()];
  };

  t.test('one of url and sha256 without the other: 400 E_BAD_MESSAGE naming the missing one, nothing created', async (t) => {
    const eventsBefore = c.store.events().length;
    for (const path of ['/api/v1/rollouts', '/api/v1/rollouts/plan']) {
      for (const [target, missing] of [
        [{ version: '1.1.0', url: ART_URL }, 'sha256'],
        [{ version: '1.1.0', sha256: SHA }, 'url'],
      ] as const) {
        const e = await failure(api(op, 'POST', path, { target }));
        t.equal(e.status, 400, `${path} ${JSON.stringify(target)}`);
        t.equal(e.code, 'E_BAD_MESSAGE');
        t.equal((e.body as { error: { field?: string } }).error.field, `target.${missing}`, 'names the missing field');
        t.match(e.message, /give both .* or neither/);
      }
    }
    t.equal((await api<RolloutListBody>(op, 'GET', '/api/v1/rollouts')).rollouts.length, 0, 'no rollout created');
    t.equal(c.store.events().length, eventsBefore, 'nothing recorded');
  });

  t.test('the CLI refuses --artifact-url or --sha256 alone with exit 2, before sending anything', async (t) => {
    for (const argv of [
      ['rollout', 'start', '--to', '1.1.0', '--artifact-url', ART_URL],
      ['plan', '--to', '1.1.0', '--sha256', SHA],
    ]) {
      const r = await run(...argv);
      t.equal(r.code, EXIT.USAGE, argv.join(' '));
      t.match(r.err, /^error E_BAD_MESSAGE: (--artifact-url without --sha256|--sha256 without --artifact-url): give both/m, argv.join(' '));
      t.notMatch(r.err, /error 400/, 'refused by the CLI, not by the API');
    }
    t.equal((await api<RolloutListBody>(op, 'GET', '/api/v1/rollouts')).rollouts.length, 0, 'no rollout created');
  });

  t.test('API: a bare version is planned, created, stored and dispatched without url or sha256', async (t) => {
    const plan = await run('plan', '--to', '1.1.0');
    t.equal(plan.code, EXIT.OK, plan.err);
    t.match(plan.out, /artifact: signed release \(each agent resolves 1\.1\.0 through its release repository\)/);
    const created = await api<RolloutDetailBody>(op, 'POST', '/api/v1/rollouts', { target: { version: '1.1.0' } });
    t.same(created.rollout.target, { version: '1.1.0' });
    const row = c.store.db.prepare('SELECT target FROM rollouts WHERE id = ?').get(created.rollout.id) as { target: string };
    t.same(JSON.parse(row.target), { version: '1.1.0' }, 'stored without url or sha256');
    t.equal((await completed(created.rollout.id)).rollout.state, 'completed');
    const targets = sent('1.1.0');
    t.equal(targets.length, agents.length, 'one upgrade command per node');
    for (const target of targets) t.same(target, { version: '1.1.0' }, 'the command carries the version alone');
  });

  t.test('CLI: rollout start --to VERSION alone creates the rollout', async (t) => {
    const r = await run('rollout', 'start', '--to', '1.2.0');
    t.equal(r.code, EXIT.OK, r.err);
    const id = /^started (\S+)/m.exec(r.out)?.[1];
    t.ok(id, 'prints the rollout id');
    const done = await completed(id!);
    t.equal(done.rollout.state, 'completed');
    t.same(done.rollout.target, { version: '1.2.0' });
    const targets = sent('1.2.0');
    t.equal(targets.length, agents.length);
    for (const target of targets) t.same(target, { version: '1.2.0' });
  });

  t.test('CLI: with --artifact-url and --sha256 the commands carry both', async (t) => {
    const r = await run('rollout', 'start', '--to', '1.3.0', '--artifact-url', ART_URL, '--sha256', SHA);
    t.equal(r.code, EXIT.OK, r.err);
    const done = await completed(/^started (\S+)/m.exec(r.out)![1]!);
    t.equal(done.rollout.state, 'completed');
    const targets = sent('1.3.0');
    t.equal(targets.length, agents.length);
    for (const target of targets) t.same(target, { version: '1.3.0', url: ART_URL, sha256: SHA });
  });
});
