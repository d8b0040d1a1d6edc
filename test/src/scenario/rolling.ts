/**
 * Shared body of the rolling-upgrade scenarios (1: 4 hosts, 2: 7 hosts with
 * maxUnavailable 2): drive a rollout through the HTTP API and assert on what
 * the chain, the sampler, the coordinator's events and the hosts show.
 */
import type { Test } from 'tap';
import { maxStallMs } from '@guts-upgrade/simulator';
import { FAST_TIMINGS, Scenario } from './harness.js';
import { downFromEvents, downFromSamples, dispatchedUpgrades, fmtMs, heightAt, intervalsWithoutProgress, maxOverlap } from './measure.js';

export async function rollingScenario(t: Test, o: { name: string; hosts: number; maxUnavailable: number; target: string }): Promise<void> {
  const began = Date.now();
  const s = await Scenario.start(t, { name: o.name, hosts: o.hosts });
  t.comment(`lab up with ${o.hosts} hosts in ${fmtMs(Date.now() - began)}`);
  const f = s.f;
  t.ok(o.maxUnavailable <= f, `maxUnavailable ${o.maxUnavailable} <= f ${f}`);

  const h0 = heightAt(s.history(), Date.now());
  const r0 = Date.now();
  const created = await s.startRollout(s.artifact(o.target), {
    strategy: 'rolling',
    options: { maxUnavailable: o.maxUnavailable, stabilizationMs: 1000 },
  });
  const id = created.rollout.id;
  t.comment(`rollout ${id} waves ${JSON.stringify(created.rollout.waves)}`);
  const done = await s.waitRollout(id, ['completed'], 240_000, t);
  const r1 = Date.now();
  t.equal(done.rollout.state, 'completed', 'rollout completed');
  t.ok(
    done.steps.every((x) => x.state === 'upgraded'),
    `every step upgraded: ${done.steps.map((x) => `${x.nodeId}:${x.state}`).join(' ')}`,
  );

  // Let the last node settle a moment in the histories.
  await s.waitHealthy('all nodes healthy on the target', o.target);
  const hist = s.history();
  const h1 = heightAt(hist, Date.now());
  t.ok(h1 > h0, `finalized height rose ${h0} -> ${h1} during the rollout`);

  const samples = downFromSamples(s.samples(), s.names, { from: r0, to: Date.now() });
  t.ok(samples.rounds > 10, `sampler probed every node ${samples.rounds} times`);
  t.ok(samples.maxDown <= f, `at most f=${f} nodes down at once by health probes (max ${samples.maxDown}: ${samples.maxDownNodes.join(',')})`);
  t.ok(samples.maxDown >= 1, 'the probes did see nodes go down (the upgrade really restarted them)');
  const events = await s.events(id);
  const evDown = maxOverlap(downFromEvents(events));
  t.ok(evDown.max <= f, `at most f=${f} nodes down at once by coordinator events (max ${evDown.max}: ${evDown.nodes.join(',')})`);
  if (o.maxUnavailable > 1) t.ok(evDown.max > 1, `waves of ${o.maxUnavailable} really ran in parallel (max ${evDown.max})`);

  // Liveness: while any node was down, the others kept finalizing. A view whose
  // leader is down produces no block (the chain's rule), and a wave of
  // maxUnavailable nodes may hold that many consecutive leaders, so the chain may
  // rightly pause for that many views; any outage longer than those views plus
  // two block intervals must see the height rise.
  const timings = { ...FAST_TIMINGS, ...(s.opts.timings ?? {}) };
  const blankMs = o.maxUnavailable * timings.leader_term_ms! + 2 * timings.block_interval_ms!;
  const stuck = intervalsWithoutProgress(hist, samples.intervals, blankMs);
  t.same(stuck, [], `the chain finalized blocks during every node outage of ${fmtMs(blankMs)} or more (${o.maxUnavailable} blank views + 2 blocks)`);
  const stall = maxStallMs(hist, { from: r0, to: r1 });

  const dispatched = dispatchedUpgrades(events);
  for (const h of s.hosts) {
    const v = await s.versions(h);
    t.equal(v.binary, o.target, `${h.name}: /usr/local/bin/guts-node --version is ${o.target}`);
    t.equal(v.running, o.target, `${h.name}: the running node reports ${o.target}`);
    t.equal(v.active, 'active', `${h.name}: guts-node.service active`);
    t.equal(dispatched.get(h.name)?.length, 1, `${h.name}: exactly one upgrade command dispatched`);
  }
  const downs = samples.intervals.map((i) => `${i.node} ${fmtMs(i.to - i.from)}`).join(', ');
  t.comment(
    `MEASURED ${o.name}: n=${o.hosts} f=${f} maxUnavailable=${o.maxUnavailable} rollout ${fmtMs(r1 - r0)}; ` +
      `max down at once: probes ${samples.maxDown}, events ${evDown.max}; height ${h0} -> ${h1}; ` +
      `longest chain stall ${fmtMs(stall)}; node outages (probes): ${downs}; ` +
      `step downtime reported by agents: ${done.steps.map((x) => `${x.nodeId} ${x.downtimeMs ?? '?'} ms`).join(', ')}`,
  );

  await s.teardown();
  const l = await s.leftovers();
  t.ok(l.clean, `nothing of the lab left: ${JSON.stringify(l.left)}`);
}
