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
import { faultTolerance, idealWaves } from '@guts-upgrade/protocol';
import { forkLoadgen, registerNodes, removeDir, round, sleep, startCoordinator, tmpDir, waitFor } from './lib/common.js';

const TARGET = { version: '1.1.0', url: 'http://127.0.0.1:9/guts-node-1.1.0', sha256: 'a'.repeat(64) };

function nodeIds(n) {
  return Array.from({ length: n }, (_, i) => `sim-${String(i).padStart(4, '0')}`);
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
    const created = await coord.api('POST', '/api/v1/rollouts', { target: TARGET, strategy: 'rolling', options: { maxUnavailable: f, stabilizationMs: 0 } });
    const id = created.rollout.id;
    const detail = await waitFor(
      async () => {
        const d = await coord.api('GET', `/api/v1/rollouts/${id}`);
        if (['failed', 'aborted', 'paused', 'rolled_back'].includes(d.rollout.state))
          throw new Error(`rollout ${id} ended ${d.rollout.state}: ${d.rollout.reason}`);
        return d.rollout.state === 'completed' ? d : null;
      },
      { what: `rollout of ${n} completed`, timeoutMs: 600_000, intervalMs: 50 },
    );
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
  return {
    title: 'Rollout makespan vs ideal (waves × T) and vs the seed serial script',
    settings: {
      T_ms: T,
      scale,
      coordinator: { heartbeatMs: 5000 * scale, tickMs: 500 * scale, stabilizationMs: 0 },
      serial: { pollMs, stabilizationMs: stabMs },
      target: 'ratio ≤ 1.05',
    },
    rows,
  };
}
