// Scenario 4: the coordinator is killed -9 in the middle of a rolling
// upgrade and restarted on the same SQLite file: the rollout completes, no
// host is upgraded twice, and f is never exceeded.
import t from 'tap';
import { maxStallMs } from '@guts-upgrade/simulator';
import { waitFor } from '@guts-upgrade/simulator';
import { preflight } from '../src/testbed/index.js';
import { Scenario, downFromEvents, downFromSamples, dispatchedUpgrades, fmtMs, heightAt, intervalsWithoutProgress, maxOverlap } from '../src/scenario/index.js';

const pf = await preflight();
if (!pf.ok) t.plan(0, pf.reason ?? 'testbed unavailable');
else
  await t.test('coordinator kill -9 mid-rollout', { timeout: 290_000 }, async (t) => {
    const s = await Scenario.start(t, { name: 's4', hosts: 4 });
    const h0 = heightAt(s.history(), Date.now());
    const r0 = Date.now();
    const created = await s.startRollout(s.artifact('1.1.0'), { strategy: 'rolling', options: { maxUnavailable: 1 } });
    const id = created.rollout.id;
    const waves = created.rollout.waves;
    const second = waves[1]![0]!;

    // Kill it while the second node's agent is in the middle of its upgrade.
    const inFlight = await waitFor(
      async () => {
        const d = await s.rollout(id);
        const st = d.steps.find((x) => x.nodeId === second);
        return st && (st.state === 'upgrading' || st.state === 'verifying') ? st.state : undefined;
      },
      { what: `${second} in flight`, timeoutMs: 120_000, intervalMs: 100 },
    );
    await s.killCoordinator();
    const killedAt = Date.now();
    t.comment(`coordinator killed -9 while ${second} was ${inFlight}`);
    // The agent carries on alone for a while.
    await new Promise((r) => setTimeout(r, 3000));
    await s.startCoordinator();
    t.comment(`coordinator restarted on the same SQLite file after ${fmtMs(Date.now() - killedAt)}`);

    const done = await s.waitRollout(id, ['completed'], 240_000, t);
    const r1 = Date.now();
    t.equal(done.rollout.state, 'completed', 'rollout completed after the restart');
    t.ok(
      done.steps.every((x) => x.state === 'upgraded'),
      `every step upgraded: ${done.steps.map((x) => `${x.nodeId}:${x.state}`).join(' ')}`,
    );
    await s.waitHealthy('all nodes healthy on 1.1.0', '1.1.0');

    const events = await s.events(id);
    t.ok(
      events.some((e) => e.type === 'rollout.created'),
      'events from before the crash survived in SQLite',
    );
    const dispatched = dispatchedUpgrades(events);
    for (const h of s.hosts) {
      const ids = dispatched.get(h.name) ?? [];
      t.equal(ids.length, 1, `${h.name}: one upgrade command id dispatched (${ids.join(', ')})`);
      const cmds = (await s.agentCommands(h)).filter((c) => c.kind === 'upgrade');
      t.equal(cmds.length, 1, `${h.name}: the agent journal holds one upgrade command`);
      t.equal(cmds[0]?.state, 'succeeded', `${h.name}: it succeeded`);
      t.equal((cmds[0]?.path ?? '').split(',').filter((x) => x === 'install').length, 1, `${h.name}: installed exactly once (${cmds[0]?.path})`);
      const v = await s.versions(h);
      t.equal(v.binary, '1.1.0', `${h.name}: guts-node --version is 1.1.0`);
      t.equal(v.running, '1.1.0', `${h.name}: running 1.1.0`);
    }
    const hist = s.history();
    const h1 = heightAt(hist, Date.now());
    t.ok(h1 > h0, `height rose ${h0} -> ${h1}`);
    const down = downFromSamples(s.samples(), s.names, { from: r0, to: Date.now() });
    t.ok(down.maxDown <= s.f, `at most f=${s.f} down at once by probes (max ${down.maxDown})`);
    const ev = maxOverlap(downFromEvents(events));
    t.ok(ev.max <= s.f, `at most f=${s.f} down at once by coordinator events (max ${ev.max})`);
    t.same(intervalsWithoutProgress(hist, down.intervals, 1500), [], 'blocks were finalized during every node outage');
    t.comment(
      `MEASURED s4: killed while ${second} ${inFlight}; rollout ${fmtMs(r1 - r0)}; max down probes ${down.maxDown}, events ${ev.max}; ` +
        `height ${h0} -> ${h1}; longest chain stall ${fmtMs(maxStallMs(hist, { from: r0, to: r1 }))}`,
    );

    await s.teardown();
    const l = await s.leftovers();
    t.ok(l.clean, `nothing of the lab left: ${JSON.stringify(l.left)}`);
  });
