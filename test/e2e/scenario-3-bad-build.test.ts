// Scenario 3: a bad build (1.1.0 that never becomes ready). The first node
// fails verification, its agent rolls it back to 1.0.0 under systemd, the
// rollout pauses before touching anyone else, and the chain keeps running.
import t from 'tap';
import { maxStallMs } from '@guts-upgrade/simulator';
import { preflight } from '../src/testbed/index.js';
import { Scenario, downFromSamples, dispatchedUpgrades, fmtMs, heightAt, intervalsWithoutProgress } from '../src/scenario/index.js';

const pf = await preflight();
if (!pf.ok) t.plan(0, pf.reason ?? 'testbed unavailable');
else
  await t.test('never-ready build is rolled back and the rollout pauses', { timeout: 290_000 }, async (t) => {
    const s = await Scenario.start(t, { name: 's3', hosts: 4 });
    const h0 = heightAt(s.history(), Date.now());
    const r0 = Date.now();
    const bad = s.artifact('1.1.0', 'never-ready');
    const created = await s.startRollout(bad, { strategy: 'rolling', options: { maxUnavailable: 1 } });
    const id = created.rollout.id;
    const paused = await s.waitRollout(id, ['paused'], 180_000, t);
    const r1 = Date.now();
    const events = await s.events(id);
    const dispatched = dispatchedUpgrades(events);
    // The first node the coordinator took down: the plan's first, unless that one led the chain at the
    // moment of dispatch (the leader goes last, and leadership rotates with every view).
    const first = [...dispatched.keys()][0]!;
    t.ok(created.rollout.waves.flat().slice(0, 2).includes(first), `${first} was among the first two of the plan`);
    t.equal(paused.rollout.state, 'paused', `rollout paused (${paused.rollout.code}: ${paused.rollout.reason})`);
    t.equal(paused.rollout.code, 'E_NODE_FAILED', 'paused because a node failed');
    const failed = paused.steps.filter((x) => x.state === 'failed').map((x) => x.nodeId);
    t.same(failed, [first], `only the first node (${first}) failed`);
    t.ok(
      paused.steps.filter((x) => x.nodeId !== first).every((x) => x.state === 'pending'),
      'no other node was touched',
    );

    t.same([...dispatched.keys()], [first], 'an upgrade was dispatched to the first node only');
    const result = events.find((e) => e.type === 'command.result' && e.nodeId === first);
    t.equal(result?.data.outcome, 'rolled_back', `its agent reported rolled_back (${String(result?.data.code)})`);
    t.equal(result?.data.runningVersion, '1.0.0', 'and the node running 1.0.0 again');

    await s.waitHealthy('all nodes healthy on 1.0.0 after the rollback', '1.0.0');
    for (const h of s.hosts) {
      const v = await s.versions(h);
      t.equal(v.binary, '1.0.0', `${h.name}: guts-node --version is 1.0.0`);
      t.equal(v.running, '1.0.0', `${h.name}: running 1.0.0`);
      t.equal(v.active, 'active', `${h.name}: guts-node.service active under systemd`);
    }
    const host = s.host(first);
    const cmds = await s.agentCommands(host);
    t.equal(cmds.length, 1, `${first}: one command in the agent journal`);
    t.equal(cmds[0]?.state, 'rolled_back', `${first}: journal says rolled_back via ${cmds[0]?.path}`);
    t.match(cmds[0]?.path ?? '', /start.*rollback/, 'the failure came at or after start, then rollback');
    const j = await host.journal('guts-node.service', 400);
    t.match(j, /Stopp(ing|ed) guts-node\.service/, `${first}: systemd stopped guts-node for the install and the rollback`);

    const hist = s.history();
    const h1 = heightAt(hist, Date.now());
    t.ok(h1 > h0, `chain kept finalizing: height ${h0} -> ${h1}`);
    const down = downFromSamples(s.samples(), s.names, { from: r0, to: Date.now() });
    t.ok(down.maxDown <= s.f, `at most f=${s.f} node down at once (max ${down.maxDown})`);
    t.same(intervalsWithoutProgress(hist, down.intervals, 1500), [], 'blocks were finalized while the bad node was down');
    const stall = maxStallMs(hist, { from: r0, to: r1 });
    const outage = down.intervals
      .filter((i) => i.node === first)
      .map((i) => fmtMs(i.to - i.from))
      .join(', ');
    t.comment(
      `MEASURED s3: ${first} failed with ${String(result?.data.code)} and was rolled back; time to pause ${fmtMs(r1 - r0)}; ` +
        `${first} out of service (probes): ${outage}; height ${h0} -> ${h1}; longest chain stall ${fmtMs(stall)}`,
    );

    await s.api('POST', `/api/v1/rollouts/${id}/abort`, { reason: 'bad build' });
    await s.teardown();
    const l = await s.leftovers();
    t.ok(l.clean, `nothing of the lab left: ${JSON.stringify(l.left)}`);
  });
