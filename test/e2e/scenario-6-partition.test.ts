// Scenario 6: a host is cut off (lab.partition: its link goes down, so the
// coordinator and its peers lose it) while its upgrade is in flight. Its
// agent finishes or rolls back on its own; the coordinator starts nobody else
// while it cannot see that host (it may be down: f is spent); after heal the
// result arrives and the rollout goes on to the end.
import t from 'tap';
import { waitFor } from '@guts-upgrade/simulator';
import { preflight, sleep } from '../src/testbed/index.js';
import { Scenario, downFromSamples, dispatchedUpgrades, fmtMs, heightAt, intervalsWithoutProgress, type EventRow } from '../src/scenario/index.js';

const pf = await preflight();
if (!pf.ok) t.plan(0, pf.reason ?? 'testbed unavailable');
else
  await t.test('partition of a host in flight', { timeout: 290_000 }, async (t) => {
    // A short catch-up timeout: cut off from its peers, the victim's verification cannot pass.
    const s = await Scenario.start(t, { name: 's6', hosts: 4, agent: { checks: { syncTimeoutMs: 10_000 } } });
    const h0 = heightAt(s.history(), Date.now());
    const r0 = Date.now();
    const created = await s.startRollout(s.artifact('1.1.0'), { strategy: 'rolling', options: { maxUnavailable: 1 } });
    const id = created.rollout.id;
    const victim = created.rollout.waves[1]![0]!;
    const host = s.host(victim);

    // Cut the second node off once its agent has stopped guts-node for the install.
    await waitFor(
      async () => {
        const ev = await s.events(id);
        return ev.some((e) => e.nodeId === victim && e.type === 'node.progress' && e.data.step === 'stop' && e.data.state === 'started') ? true : undefined;
      },
      { what: `${victim} stopped by its agent`, timeoutMs: 120_000, intervalMs: 100 },
    );
    await s.lab.partition(victim);
    const cutAt = Date.now();
    t.comment(`${victim} partitioned`);

    // Its agent ends the command on its own: the journal reaches a terminal state.
    const cmd = await waitFor(
      async () => {
        const c = (await s.agentCommands(host)).find((x) => x.id.startsWith(id));
        return c && ['succeeded', 'rolled_back', 'failed'].includes(c.state) ? c : undefined;
      },
      { what: `${victim} agent finishes alone`, timeoutMs: 120_000, intervalMs: 500 },
    );
    const aloneAt = Date.now();
    t.pass(`${victim}'s agent ended its command alone: ${cmd.state} via ${cmd.path}`);
    // Stay partitioned a little longer so the coordinator has had every chance to misbehave.
    await sleep(6000);
    const during = await s.rollout(id);
    const healAt = Date.now();
    await s.lab.heal(victim);
    t.comment(`healed after ${fmtMs(healAt - cutAt)}; rollout was ${during.rollout.state} ${during.steps.map((x) => `${x.nodeId}:${x.state}`).join(' ')}`);

    let events: EventRow[] = await s.events(id);
    const sentWhileCut = events.filter((e) => e.type === 'command.sent' && e.nodeId !== victim && Date.parse(e.at) >= cutAt && Date.parse(e.at) <= healAt);
    t.same(
      sentWhileCut.map((e) => e.nodeId),
      [],
      'no other node was started while the coordinator could not see the partitioned host',
    );
    const down = downFromSamples(s.samples(), s.names, { from: r0, to: Date.now() });
    t.ok(down.maxDown <= s.f, `never more than f=${s.f} down at once by probes (max ${down.maxDown}: ${down.maxDownNodes.join(',')})`);

    // After heal: the result reaches the coordinator and the rollout continues.
    let end = await s.waitRollout(id, ['completed', 'paused'], 180_000, t);
    let retry: string | null = null;
    if (end.rollout.state === 'paused') {
      // The partition made the victim's verification fail (it could not see its
      // peers), its agent rolled it back; the operator resumes, the rollout
      // finishes the others, then a follow-up rollout takes the victim.
      t.comment(`paused after heal: ${end.rollout.reason}`);
      await s.api('POST', `/api/v1/rollouts/${id}/resume`, { reason: 'partition healed' });
      end = await s.waitRollout(id, ['completed', 'failed'], 180_000, t);
      await s.waitHealthy('all nodes healthy before the follow-up');
      const again = await s.startRollout(s.artifact('1.1.0'), { strategy: 'rolling', nodes: [victim] });
      retry = again.rollout.id;
      await s.waitRollout(retry, ['completed'], 120_000, t);
    }
    t.pass(`rollout ${id} ended ${end.rollout.state}${retry ? `, follow-up ${retry} completed` : ''}`);
    await s.waitHealthy('all nodes on 1.1.0', '1.1.0');
    for (const h of s.hosts) {
      const v = await s.versions(h);
      t.equal(v.binary, '1.1.0', `${h.name}: --version 1.1.0`);
      t.equal(v.running, '1.1.0', `${h.name}: running 1.1.0`);
    }
    events = await s.events(id);
    const dispatched = dispatchedUpgrades(events);
    for (const n of s.names) t.ok((dispatched.get(n)?.length ?? 0) <= 1, `${n}: at most one upgrade command in rollout ${id}`);
    const hist = s.history();
    const h1 = heightAt(hist, Date.now());
    t.ok(h1 > h0, `height rose ${h0} -> ${h1}`);
    const all = downFromSamples(s.samples(), s.names, { from: r0, to: Date.now() });
    t.ok(all.maxDown <= s.f, `never more than f=${s.f} down at once over the whole run (max ${all.maxDown})`);
    t.same(intervalsWithoutProgress(hist, all.intervals, 1500), [], 'blocks were finalized during every node outage');
    t.comment(
      `MEASURED s6: ${victim} partitioned ${fmtMs(healAt - cutAt)}; its agent ended alone after ${fmtMs(aloneAt - cutAt)} with ${cmd.state} (${cmd.path}); ` +
        `commands to others while cut: ${sentWhileCut.length}; first rollout ${end.rollout.state}${retry ? ' + follow-up for the victim' : ''}; max down ${all.maxDown}; height ${h0} -> ${h1}`,
    );

    await s.teardown();
    const l = await s.leftovers();
    t.ok(l.clean, `nothing of the lab left: ${JSON.stringify(l.left)}`);
  });
