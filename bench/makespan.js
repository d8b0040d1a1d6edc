/**
 * 1. Rollout makespan vs the ideal schedule, and vs the seed's serial script.
 *
 * The REAL coordinator process (server-cli.js) drives n simulated agents (the
 * benchmark load generator, loadgen.js) whose upgrade takes exactly T. Ideal:
 * idealWaves(n, f) × T with maxUnavailable = f and stabilization 0.
 *
 * Every wall-clock setting is scaled by the same factor (1/10 by default) from
 * its production value: T = 1 s for a ~10 s node upgrade, coordinator
 * heartbeat 5 s → 0.5 s (timeout 15 s → 1.5 s), tick 500 ms → 50 ms, and for
 * the seed's serial procedure 5 s sync polls → 0.5 s, 30 s stabilization → 3 s.
 */
import { createHash } from 'node:crypto';
import { faultTolerance, fewestWeightedWaves, firstFitDecreasing, idealWaves, quorumWeightFor } from '@guts-upgrade/protocol';
import { Rng } from '@guts-upgrade/testkit';
import { chainClock } from './lib/chain-clock.js';
import { forkLoadgen, registerNodes, removeDir, round, sleep, startCoordinator, tmpDir, waitFor } from './lib/common.js';

const TARGET = { version: '1.1.0', url: 'http://127.0.0.1:9/guts-node-1.1.0', sha256: 'a'.repeat(64) };

function nodeIds(n) {
  return Array.from({ length: n }, (_, i) => `sim-${String(i).padStart(4, '0')}`);
}

/** A rolling rollout to TARGET with maxUnavailable, no stabilization; its detail once completed. */
async function rollingRollout(coord, maxUnavailable, what, timeoutMs) {
  const created = await coord.api('POST', '/api/v1/rollouts', { target: TARGET, strategy: 'rolling', options: { maxUnavailable, stabilizationMs: 0 } });
  const id = created.rollout.id;
  return waitFor(
    async () => {
      const d = await coord.api('GET', `/api/v1/rollouts/${id}`);
      if (['failed', 'aborted', 'paused', 'rolled_back'].includes(d.rollout.state))
        throw new Error(`rollout ${id} ended ${d.rollout.state}: ${d.rollout.reason}`);
      return d.rollout.state === 'completed' ? d : null;
    },
    { what: `${what} completed`, timeoutMs, intervalMs: 50 },
  );
}

async function ours(n, T, scale) {
  const dir = tmpDir(`makespan-${n}`);
  const coord = await startCoordinator(dir, {
    heartbeat: { intervalMs: Math.round(5000 * scale), timeoutMs: Math.round(15000 * scale) },
    tickMs: Math.max(10, Math.round(500 * scale)),
  });
  const gens = [];
  try {
    const ids = nodeIds(n);
    const tokens = await registerNodes(coord, ids);
    const procs = n > 50 ? 2 : 1;
    const genesis = Date.now();
    for (let p = 0; p < procs; p++) {
      const g = forkLoadgen();
      gens.push(g);
      const mine = ids.filter((_, i) => i % procs === p).map((id) => ({ id, token: tokens[id] }));
      await g.call({ op: 'init', url: coord.wsUrl, nodes: mine, leader: ids[0], version: '1.0.0', T, genesis, n });
    }
    await waitFor(
      async () => {
        const f = await coord.api('GET', '/api/v1/fleet');
        return f.down.length === 0 && f.leader === ids[0] && f.nodes.every((x) => x.finalizedHeight != null);
      },
      { what: 'fleet healthy with a leader', timeoutMs: 30_000 },
    );
    const f = faultTolerance(n);
    const detail = await rollingRollout(coord, f, `rollout of ${n}`, 600_000);
    const makespanMs = detail.rollout.stateSince - detail.rollout.createdAt;
    const waves = idealWaves(n, f);
    const ideal = waves * T;
    // Where the time between waves goes: result of a wave's last node -> first command of the next wave.
    const cmds = (await Promise.all(gens.map((g) => g.call({ op: 'stats' })))).flatMap((s) => s.commands).sort((a, b) => a.recvAt - b.recvAt);
    const waveStarts = [];
    for (const c of cmds)
      if (!waveStarts.length || c.recvAt - waveStarts.at(-1).recvAt > T / 2) waveStarts.push({ recvAt: c.recvAt, cmds: [c] });
      else waveStarts.at(-1).cmds.push(c);
    const gaps = [];
    for (let i = 1; i < waveStarts.length; i++) {
      const lastResult = Math.max(...waveStarts[i - 1].cmds.map((c) => c.resultAt ?? 0));
      gaps.push(waveStarts[i].recvAt - lastResult);
    }
    const firstDispatch = cmds.length ? cmds[0].recvAt - detail.rollout.createdAt : null;
    return {
      n,
      f,
      waves,
      measuredWaves: waveStarts.length,
      T,
      idealMs: ideal,
      makespanMs,
      ratio: round(makespanMs / ideal, 3),
      firstDispatchMs: firstDispatch,
      meanInterWaveGapMs: gaps.length ? Math.round(gaps.reduce((a, b) => a + b, 0) / gaps.length) : null,
      interWaveGapsMs: gaps,
    };
  } finally {
    for (const g of gens) await g.call({ op: 'close' }).catch(() => undefined);
    for (const g of gens) await g.stop();
    await coord.stop();
    removeDir(dir);
  }
}

/**
 * The seed's procedure on the same simulated nodes: one node at a time, run the
 * upgrade (returns after T), poll sync every pollMs (checked first, then
 * sleep: the kinder reading of the script), then wait stabMs before the next
 * node (not after the last one).
 */
async function serial(n, T, pollMs, stabMs) {
  const g = forkLoadgen();
  try {
    const ids = nodeIds(n);
    await g.call({ op: 'init', url: null, nodes: ids.map((id) => ({ id, token: 'x' })), leader: ids[0], version: '1.0.0', T, genesis: Date.now(), n });
    const order = [...ids.slice(1), ids[0]]; // leader last, as the runbook said
    const t0 = Date.now();
    for (let i = 0; i < order.length; i++) {
      const id = order[i];
      await g.call({ op: 'upgradeDirect', id, commandId: `serial-${id}`, version: TARGET.version });
      for (;;) {
        const s = await g.call({ op: 'status', id });
        if (s.status.ready && s.status.nodeVersion === TARGET.version && s.status.finalizedHeight >= s.height - 5) break;
        await sleep(pollMs);
      }
      if (i < order.length - 1) await sleep(stabMs);
    }
    return { n, makespanMs: Date.now() - t0 };
  } finally {
    await g.stop();
  }
}

// ------------------------------------------------------------------ weighted validators (issue 17, target 5)

/**
 * Weights drawn like real stake: log-normal (sigma 1.5, so a few validators
 * hold much of the weight and a long tail holds little), median about 10.
 * Any validator heavier than the largest slack could never be upgraded by a
 * rolling rollout (the plan refuses it), so such weights are capped at the
 * slack, repeated until none is over it.
 */
export function stakeWeights(n, seed) {
  const g = new Rng(seed);
  const r = () => g.next();
  const normal = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  let w = Array.from({ length: n }, () => Math.max(1, Math.round(10 * Math.exp(1.5 * normal()))));
  for (;;) {
    const total = w.reduce((a, b) => a + b, 0);
    const slack = total - quorumWeightFor(total);
    if (Math.max(...w) <= slack) return { weights: w, total, slack };
    w = w.map((x) => Math.min(x, slack));
  }
}

/**
 * The best wave schedule on the chain's clock: the fewest waves (exact bin
 * packing up to 20 validators, first-fit decreasing above) replayed in the
 * order that ends first. A wave started at s takes its nodes down at s + 0.4T
 * and up at s + 0.7T, its results come at s + T, and each of its validators is
 * back only at the start of its own next leader view (the block that proves
 * it); the next wave starts when the last of them is back. Orders are tried
 * exhaustively up to 6 waves, greedily (earliest end first) above.
 */
function bestWaveSchedule(waves, clock, t0, T) {
  const waveEnd = (wave, s) => Math.max(s + T, ...wave.map((i) => clock.viewStart(clock.nextTurn(i, s + 0.7 * T))));
  const replay = (order) => order.reduce((s, w) => waveEnd(w, s), t0) - t0;
  if (waves.length <= 6) {
    let best = Infinity;
    const permute = (left, done) => {
      if (left.length === 0) best = Math.min(best, replay(done));
      for (let j = 0; j < left.length; j++) permute([...left.slice(0, j), ...left.slice(j + 1)], [...done, left[j]]);
    };
    permute(waves, []);
    return best;
  }
  let s = t0;
  const left = [...waves];
  while (left.length) {
    let j = 0;
    for (let x = 1; x < left.length; x++) if (waveEnd(left[x], s) < waveEnd(left[j], s)) j = x;
    s = waveEnd(left.splice(j, 1)[0], s);
  }
  return s - t0;
}

async function weighted(n, seed, T, viewMs, scale) {
  const { weights, total, slack } = stakeWeights(n, seed);
  const ids = nodeIds(n);
  const validators = ids.map((id, i) => ({
    nodeId: id,
    name: `val-${i}`,
    pubkey: createHash('sha256').update(id).digest('hex'),
    weight: weights[i],
  }));
  const dir = tmpDir(`makespan-w${n}`);
  const coord = await startCoordinator(dir, {
    heartbeat: { intervalMs: Math.round(5000 * scale), timeoutMs: Math.round(15000 * scale) },
    tickMs: Math.max(10, Math.round(500 * scale)),
  });
  const g = forkLoadgen();
  try {
    const tokens = await registerNodes(coord, ids, 8, Object.fromEntries(validators.map((v) => [v.nodeId, v.pubkey])));
    const genesis = Date.now();
    const clock = chainClock({ genesis, viewMs, validators });
    await g.call({
      op: 'init',
      url: coord.wsUrl,
      nodes: ids.map((id) => ({ id, token: tokens[id] })),
      leader: ids[0],
      version: '1.0.0',
      T,
      genesis,
      n,
      chain: { viewMs, validators },
    });
    await waitFor(
      async () => {
        const f = await coord.api('GET', '/api/v1/fleet');
        return f.down.length === 0 && f.chain?.status === 'adopted' && f.chain.validators.every((v) => v.live);
      },
      { what: 'chain adopted, every validator proven live', timeoutMs: 60_000, intervalMs: 50 },
    );
    // maxUnavailable f, the most the plan allows; the ideal packs with the same count limit.
    const f = faultTolerance(n);
    const detail = await rollingRollout(coord, f, `weighted rollout of ${n}`, 900_000);
    const t0 = detail.rollout.createdAt;
    const makespanMs = detail.rollout.stateSince - t0;
    const packing = fewestWeightedWaves(weights, slack, f);
    const idealMs = Math.round(bestWaveSchedule(packing.waves, clock, t0, T));
    const lowerBoundMs = packing.lowerBound * T;
    const cmds = (await g.call({ op: 'stats' })).commands.sort((a, b) => a.recvAt - b.recvAt);
    // Where the time goes: each node is back on the chain at its next own leader view after
    // ready (recvAt + 0.7T); a dispatch that waited for it waited from the moment both that
    // proof and its result existed. The rest of the gap is belief (f + 1 agents' heartbeats
    // relaying the block) and the coordinator's tick.
    const index = new Map(ids.map((id, i) => [id, i]));
    const backAt = cmds.map((c) => Math.max(c.resultAt ?? 0, clock.viewStart(clock.nextTurn(index.get(c.id), c.recvAt + 0.7 * T))));
    const waits = [];
    for (let j = 1; j < cmds.length; j++) {
      const lastBack = Math.max(...backAt.slice(0, j).filter((b) => b <= cmds[j].recvAt));
      if (Number.isFinite(lastBack) && cmds[j].recvAt - cmds[j - 1].recvAt > T / 2) waits.push(cmds[j].recvAt - lastBack);
    }
    let measuredWaves = 0;
    for (let j = 0; j < cmds.length; j++) if (j === 0 || cmds[j].recvAt - cmds[j - 1].recvAt > T / 2) measuredWaves++;
    return {
      n,
      seed,
      totalWeight: total,
      slack,
      heaviest: Math.max(...weights),
      lightest: Math.min(...weights),
      optimalWaves: packing.waves.length,
      exact: packing.exact,
      lowerBoundWaves: packing.lowerBound,
      ffdWaves: firstFitDecreasing(weights, slack, f).length,
      f,
      viewMs,
      rotationMs: n * viewMs,
      T,
      makespanMs,
      idealMs,
      ratio: round(makespanMs / idealMs, 3),
      lowerBoundMs,
      overLowerBound: round(makespanMs / lowerBoundMs, 2),
      dispatched: cmds.length,
      measuredWaves,
      meanWaitAfterBackMs: waits.length ? Math.round(waits.reduce((a, b) => a + b, 0) / waits.length) : null,
    };
  } finally {
    await g.call({ op: 'close' }).catch(() => undefined);
    await g.stop();
    await coord.stop();
    removeDir(dir);
  }
}

export async function makespanBench({ quick, log, opts }) {
  const scale = 0.1;
  const T = 1000;
  const sizes = opts.sizes ?? (quick ? [4, 7] : [4, 7, 31, 100]);
  const serialMax = opts.serialMaxN ?? (quick ? 7 : 100);
  const pollMs = 5000 * scale;
  const stabMs = 30_000 * scale;
  const rows = [];
  for (const n of sizes) {
    log(`makespan: ours n=${n}`);
    const o = await ours(n, T, scale);
    let s = null;
    if (n <= serialMax) {
      log(`makespan: seed serial n=${n} (~${Math.round((n * (T + stabMs)) / 1000)} s)`);
      s = await serial(n, T, pollMs, stabMs);
    }
    rows.push({ ...o, serialMs: s?.makespanMs ?? null, serialOverOurs: s ? round(s.makespanMs / o.makespanMs, 2) : null });
    log(`  n=${n}: ${o.makespanMs} ms vs ideal ${o.idealMs} ms (x${o.ratio}); serial ${s?.makespanMs ?? '–'} ms`);
  }
  // Weighted sets on a chain: a view of 1 s scaled like the rest (100 ms), seeds fixed so runs compare.
  const viewMs = 1000 * scale;
  const weightedRows = [];
  for (const n of opts.weightedSizes ?? (quick ? [7] : [7, 13, 20, 31, 100])) {
    for (const seed of opts.weightedSeeds ?? (quick ? [1] : [1, 2, 3])) {
      log(`makespan: weighted n=${n} seed=${seed}`);
      const w = await weighted(n, seed, T, viewMs, scale);
      weightedRows.push(w);
      log(
        `  n=${n} seed=${seed}: ${w.makespanMs} ms vs best wave schedule ${w.idealMs} ms (x${w.ratio}); ${w.optimalWaves} waves${w.exact ? ' (optimal)' : ` (lower bound ${w.lowerBoundWaves})`}`,
      );
    }
  }
  return {
    title: 'Rollout makespan vs ideal (waves × T) and vs the seed serial script',
    settings: {
      T_ms: T,
      scale,
      coordinator: { heartbeatMs: 5000 * scale, tickMs: 500 * scale, stabilizationMs: 0 },
      serial: { pollMs, stabilizationMs: stabMs },
      target: 'ratio ≤ 1.05',
      weighted: {
        viewMs,
        weights: 'log-normal sigma 1.5, median ~10, capped at the largest slack (stakeWeights)',
        ideal:
          'fewest waves within the slack (exact ≤ 20 validators, else first-fit decreasing), replayed on the chain clock in the best order: each validator back at its next own leader view',
        lowerBound: 'lower-bound waves × T: max(ceil(total / slack), #weights > slack/2) waves, no leader-view wait',
        maxUnavailable: 'f (the most a plan allows; the ideal packs with the same count limit)',
      },
    },
    rows,
    weightedRows,
  };
}
