// Scenario 7: major upgrade 1.0.0 -> 2.0.0 with the halt strategy, inside a
// maintenance window and only after approval; each agent runs the manual
// migration command from its config. The chain is down for the halt (the
// downtime is measured and reported, not asserted) and resumes after.
import t from 'tap';
import { maxStallMs } from '@guts-upgrade/simulator';
import { preflight, sleep } from '../src/testbed/index.js';
import { DATA_DIR, Scenario, fmtMs, heightAt } from '../src/scenario/index.js';

const WINDOW = 'e2e-window';

const pf = await preflight();
if (!pf.ok) t.plan(0, pf.reason ?? 'testbed unavailable');
else
  await t.test('major upgrade with halt, window and approval', { timeout: 290_000 }, async (t) => {
    const s = await Scenario.start(t, {
      name: 's7',
      hosts: 4,
      // A window that is always open: opens every minute, lasts two hours.
      coordinator: { windows: [{ name: WINDOW, cron: '* * * * *', duration: '2h' }] },
      agent: {
        commands: { migrate: ['/usr/local/bin/guts-node', 'migrate', '--from', '{from}', '--to', '{to}', '--data-dir', '{dataDir}'] },
      },
    });
    const h0 = heightAt(s.history(), Date.now());
    const created = await s.startRollout(s.artifact('2.0.0'), {
      strategy: 'halt',
      options: { window: WINDOW, requireApproval: true, haltTimeoutMs: 120_000 },
    });
    const id = created.rollout.id;
    const gated = await s.waitRollout(id, ['awaiting_approval'], 30_000, t);
    t.equal(gated.rollout.state, 'awaiting_approval', 'the major rollout waits for approval');
    await sleep(1500);
    t.same(
      (await s.events(id)).filter((e) => e.type === 'command.sent'),
      [],
      'nothing was sent to any node before approval',
    );

    const r0 = Date.now();
    await s.api('POST', `/api/v1/rollouts/${id}/approve`, { reason: 'e2e approves' });
    const done = await s.waitRollout(id, ['completed'], 240_000, t);
    const r1 = Date.now();
    t.equal(done.rollout.state, 'completed', 'halt rollout completed');
    t.ok(
      done.steps.every((x) => x.state === 'upgraded'),
      `every step upgraded: ${done.steps.map((x) => `${x.nodeId}:${x.state}`).join(' ')}`,
    );

    const events = await s.events(id);
    const kinds = events.filter((e) => e.type === 'command.sent').map((e) => `${e.nodeId}:${String(e.data.kind)}`);
    for (const n of s.names) {
      t.ok(kinds.includes(`${n}:prepare`), `${n}: staged first (prepare)`);
      t.ok(kinds.includes(`${n}:upgrade`), `${n}: then upgraded`);
    }
    const halt = events.find((e) => e.type === 'halt.started');
    t.ok(halt, `halt.started at height ${String(halt?.data.height)}`);
    const manual = events.filter((e) => e.type === 'node.progress' && e.data.step === 'migrate' && /guts-node.*migrate/.test(String(e.data.message ?? '')));
    t.same([...new Set(manual.map((e) => e.nodeId))].sort(), [...s.names].sort(), 'every agent ran the configured migration command');

    await s.waitHealthy('all nodes healthy on 2.0.0', '2.0.0');
    for (const h of s.hosts) {
      const v = await s.versions(h);
      t.equal(v.binary, '2.0.0', `${h.name}: guts-node --version is 2.0.0`);
      t.equal(v.running, '2.0.0', `${h.name}: running 2.0.0`);
      const schema = JSON.parse(await h.readFile(`${DATA_DIR}/schema.json`)) as { schema: number; migrated_from?: number };
      t.equal(schema.schema, 200, `${h.name}: data dir migrated to schema 200 (from ${schema.migrated_from})`);
    }
    // The chain resumes after the halt.
    const haltHeight = Number(halt?.data.height ?? 0);
    const hist = s.history();
    const h1 = heightAt(hist, Date.now());
    t.ok(h1 > haltHeight, `the chain finalizes again after the halt: ${haltHeight} -> ${h1}`);
    // The outage: the longest gap between consecutive new heights after approval.
    let gap = { ms: 0, fromHeight: 0, toHeight: 0 };
    let prev: { t: number; height: number } | null = null;
    for (const e of hist) {
      if (e.t < r0 || (prev && e.height <= prev.height)) continue;
      if (prev && e.t - prev.t > gap.ms) gap = { ms: e.t - prev.t, fromHeight: prev.height, toHeight: e.height };
      prev = e;
    }
    const downtime = maxStallMs(hist, { from: r0, to: r1 });
    t.comment(
      `MEASURED s7: approval -> completed ${fmtMs(r1 - r0)}; chain downtime (longest stall) ${fmtMs(downtime)}, ` +
        `from height ${gap.fromHeight} to ${gap.toHeight}; halt.started at height ${haltHeight}; height ${h0} -> ${h1}; ` +
        `agent-reported node downtime: ${done.steps.map((x) => `${x.nodeId} ${x.downtimeMs ?? '?'} ms`).join(', ')}`,
    );

    await s.teardown();
    const l = await s.leftovers();
    t.ok(l.clean, `nothing of the lab left: ${JSON.stringify(l.left)}`);
  });
