/**
 * 3. Coordinator scale: thousands of simulated agents (the benchmark load
 * generator, loadgen.js, spread over several processes) connected with
 * heartbeats to the REAL coordinator process at its production settings
 * (heartbeat 5 s, tick 500 ms, info logging to a file).
 *
 * Phases: register over the API -> connect -> idle heartbeats -> heartbeat
 * stress (agents beat faster than told) -> one large rolling rollout with
 * maxUnavailable = f. Measured: command dispatch latency (command issuedAt, the
 * coordinator's decision time, to receipt by the simulated agent), heartbeat
 * processing, coordinator RSS/CPU (/proc), SQLite writes during the rollout
 * (events appended, bytes written and write syscalls from /proc/<pid>/io).
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { faultTolerance, idealWaves } from '@guts-upgrade/protocol';
import {
  forkLoadgen,
  percentile,
  procIo,
  procSample,
  registerNodes,
  removeDir,
  round,
  sampler,
  sleep,
  startCoordinator,
  tmpDir,
  waitFor,
  mb,
  median,
} from './lib/common.js';

const TARGET = { version: '1.1.0', url: 'http://127.0.0.1:9/guts-node-1.1.0', sha256: 'b'.repeat(64) };

/** The coordinator's 'commands dispatched' log lines of one rollout: where each dispatch's time went inside it. */
function dispatchLog(file, rolloutId) {
  const ticks = fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.includes('"commands dispatched"'))
    .map((l) => JSON.parse(l))
    .filter((l) => l.rolloutId === rolloutId)
    .map(({ commands, decideMs, commitMs, sendMs }) => ({ commands, decideMs, commitMs, sendMs }));
  const largest = ticks.reduce((a, t) => (!a || t.commands > a.commands ? t : a), null);
  return { ticks: ticks.length, largest };
}

/** Probes the coordinator's event loop: latency of GET /health/live while the load runs. */
function loopProbe(url, everyMs = 200) {
  const lat = [];
  let stop = false;
  const done = (async () => {
    while (!stop) {
      const t = performance.now();
      const ok = await fetch(`${url}/health/live`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) lat.push(performance.now() - t);
      await sleep(everyMs);
    }
  })();
  return {
    async stop() {
      stop = true;
      await done;
      const s = lat.sort((a, b) => a - b);
      return { p50Ms: round(percentile(s, 50), 1), p99Ms: round(percentile(s, 99), 1), maxMs: round(s.at(-1), 1), samples: s.length };
    },
  };
}

async function heartbeatPhase(coord, gens, seconds, label) {
  const before = (await Promise.all(gens.map((g) => g.call({ op: 'stats' })))).reduce((a, s) => a + s.heartbeats, 0);
  const probe = loopProbe(coord.url);
  const smp = sampler(coord.pid, 500);
  const t0 = Date.now();
  await sleep(seconds * 1000);
  const res = smp.stop();
  const wall = (Date.now() - t0) / 1000;
  const lat = await probe.stop();
  const after = (await Promise.all(gens.map((g) => g.call({ op: 'stats' })))).reduce((a, s) => a + s.heartbeats, 0);
  const hbs = after - before;
  // Processed: every node's lastSeenAt must be fresh; a backlog shows up as stale nodes and a slow probe.
  const fleet = await coord.api('GET', '/api/v1/nodes');
  const now = Date.now();
  const ages = fleet.nodes.map((x) => (x.lastSeenAt ? now - Date.parse(x.lastSeenAt) : Infinity)).sort((a, b) => a - b);
  const rate = hbs / wall;
  return {
    phase: label,
    seconds: round(wall, 1),
    heartbeatsSent: hbs,
    heartbeatsPerSec: Math.round(rate),
    coordinatorCpuPct: round(res.cpuPct, 1),
    cpuMicrosPerHeartbeat: hbs ? Math.round((res.cpuSec * 1e6) / hbs) : null,
    estMaxHeartbeatsPerSecOneCore: hbs && res.cpuSec > 0 ? Math.round(hbs / res.cpuSec) : null,
    lastSeenAgeP50Ms: percentile(ages, 50),
    lastSeenAgeMaxMs: ages.at(-1),
    rssMiB: mb(res.rssMaxBytes),
    apiProbe: lat,
  };
}

export async function scaleBench({ quick, log, opts }) {
  const N = opts.agents ?? (quick ? 200 : 2000);
  const procs = N >= 1000 ? 4 : 2;
  const T = quick ? 2000 : 5000;
  const hbMs = 5000;
  const rounds = opts.scaleRounds ?? (quick ? 1 : 3);
  const dir = tmpDir('scale');
  const coord = await startCoordinator(dir, { heartbeat: { intervalMs: hbMs, timeoutMs: 15000 }, tickMs: 500 });
  const gens = [];
  const out = {
    title: `Coordinator scale: ${N} simulated agents in ${procs} load-generator processes`,
    settings: { agents: N, loadgenProcesses: procs, heartbeatMs: hbMs, tickMs: 500, T_ms: T, rounds },
  };
  try {
    const rss0 = procSample(coord.pid)?.rss ?? 0;
    const ids = Array.from({ length: N }, (_, i) => `sim-${String(i).padStart(5, '0')}`);
    log(`scale: registering ${N} nodes over the API`);
    let t = Date.now();
    const tokens = await registerNodes(coord, ids, 16);
    out.registration = { nodes: N, seconds: round((Date.now() - t) / 1000, 1), perSec: Math.round(N / ((Date.now() - t) / 1000)) };
    log(`scale: connecting ${N} simulated agents`);
    t = Date.now();
    const genesis = Date.now();
    const smpConnect = sampler(coord.pid, 500);
    await Promise.all(
      Array.from({ length: procs }, async (_, p) => {
        const g = forkLoadgen();
        gens.push(g);
        const mine = ids.filter((_, i) => i % procs === p).map((id) => ({ id, token: tokens[id] }));
        await g.call({ op: 'init', url: coord.wsUrl, nodes: mine, leader: ids[0], version: '1.0.0', T, genesis, n: N, concurrency: 20 });
      }),
    );
    const c = smpConnect.stop();
    out.connect = { seconds: round((Date.now() - t) / 1000, 1), perSec: Math.round(N / ((Date.now() - t) / 1000)), coordinatorCpuPct: round(c.cpuPct, 1) };
    await waitFor(
      async () => {
        const f = await coord.api('GET', '/api/v1/fleet');
        return f.down.length === 0 && f.leader === ids[0];
      },
      { what: 'all agents healthy', timeoutMs: 60_000, intervalMs: 500 },
    );
    out.rssIdleBaseMiB = mb(rss0);

    log('scale: idle heartbeats');
    out.heartbeats = [await heartbeatPhase(coord, gens, quick ? 10 : 20, `idle (every ${hbMs} ms, as told)`)];
    const stressMs = 250;
    for (const g of gens) await g.call({ op: 'heartbeatOverride', intervalMs: stressMs });
    await sleep(1000);
    log('scale: heartbeat stress');
    out.heartbeats.push(await heartbeatPhase(coord, gens, quick ? 8 : 15, `stress (every ${stressMs} ms)`));
    for (const g of gens) await g.call({ op: 'heartbeatOverride', intervalMs: hbMs });
    await sleep(2000);

    // ------------------------------------------------------------ large rollouts
    // Several rounds, each an idle-heartbeat phase then a rollout to the next minor version, so a
    // figure is a median with its spread rather than one run's luck (2 shared cores are noisy).
    const f = faultTolerance(N);
    const maxUnavailable = Math.min(f, 1000);
    out.rollouts = [];
    for (let r = 0; r < rounds; r++) {
      if (r > 0) {
        log(`scale: idle heartbeats, round ${r + 1} of ${rounds}`);
        out.heartbeats.push(await heartbeatPhase(coord, gens, quick ? 10 : 20, `idle (every ${hbMs} ms, as told), round ${r + 1}`));
      }
      await Promise.all(gens.map((g) => g.call({ op: 'stats', reset: true })));
      const target = { ...TARGET, version: `1.${r + 1}.0` };
      log(`scale: rolling rollout of ${N} nodes to ${target.version}, maxUnavailable ${maxUnavailable}, round ${r + 1} of ${rounds}`);
      out.rollouts.push(await rolloutRound({ coord, gens, dir, N, T, maxUnavailable, target }));
    }
    out.rollout = medianRollout(out.rollouts);
    out.metricsScrape = await metricsScrape(coord.url, 5);
    out.rssEndMiB = mb(procSample(coord.pid)?.rss ?? 0);
    return out;
  } finally {
    for (const g of gens) await g.call({ op: 'close' }).catch(() => undefined);
    for (const g of gens) await g.stop();
    await coord.stop();
    removeDir(dir);
  }
}

/** A Prometheus scrape of the coordinator after the rollouts (every node then has a downtime series): the median of `n`, one after another. */
async function metricsScrape(url, n) {
  const times = [];
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const body = await (await fetch(`${url}/metrics`)).text();
    times.push(performance.now() - t);
    bytes = Buffer.byteLength(body);
    await sleep(200);
  }
  return { scrapes: n, medianMs: round(median(times), 1), maxMs: round(Math.max(...times), 1), kiB: Math.round(bytes / 1024) };
}

/** One large rolling rollout to `target` with maxUnavailable = f, measured from the coordinator's side and the agents'. */
async function rolloutRound({ coord, gens, dir, N, T, maxUnavailable, target }) {
  const db = new Database(coord.db, { readonly: true, fileMustExist: true });
  const seq0 = db.prepare('SELECT COALESCE(MAX(seq), 0) AS s FROM events').get().s;
  const io0 = procIo(coord.pid);
  const probe = loopProbe(coord.url, 250);
  const smp = sampler(coord.pid, 500);
  const created = await coord.api('POST', '/api/v1/rollouts', { target, strategy: 'rolling', options: { maxUnavailable, stabilizationMs: 0 } });
  const id = created.rollout.id;
  const detail = await waitFor(
    async () => {
      const d = await coord.api('GET', `/api/v1/rollouts/${id}`);
      if (['failed', 'aborted', 'paused', 'rolled_back'].includes(d.rollout.state)) throw new Error(`rollout ended ${d.rollout.state}: ${d.rollout.reason}`);
      return d.rollout.state === 'completed' ? d : null;
    },
    { what: 'large rollout completed', timeoutMs: 900_000, intervalMs: 500 },
  );
  const res = smp.stop();
  const lat = await probe.stop();
  const io1 = procIo(coord.pid);
  const rows = db.prepare('SELECT type, COUNT(*) AS n FROM events WHERE seq > ? GROUP BY type ORDER BY n DESC').all(seq0);
  db.close();
  const events = rows.reduce((a, r) => a + r.n, 0);
  const makespanMs = detail.rollout.stateSince - detail.rollout.createdAt;
  const stats = await Promise.all(gens.map((g) => g.call({ op: 'stats' })));
  const latencies = stats.flatMap((s) => s.latencies).sort((a, b) => a - b);
  const secs = makespanMs / 1000;
  const waves = idealWaves(N, maxUnavailable);
  const result = {
    targetVersion: target.version,
    nodes: N,
    maxUnavailable,
    waves,
    makespanMs,
    idealMs: waves * T,
    ratioToIdeal: round(makespanMs / (waves * T), 3),
    commandsReceived: latencies.length,
    dispatchLatencyMs: { p50: percentile(latencies, 50), p90: percentile(latencies, 90), p99: percentile(latencies, 99), max: latencies.at(-1) },
    // The worst of the generators' own event-loop delays over the rollout (see loadgen.js).
    loadgenLoopLagMs: {
      p99: Math.max(...stats.map((s) => s.loopLagMs.p99)),
      max: Math.max(...stats.map((s) => s.loopLagMs.max)),
    },
    progressMessages: stats.reduce((a, s) => a + s.progress, 0),
    results: stats.reduce((a, s) => a + s.results, 0),
    coordinatorCpuPct: round(res.cpuPct, 1),
    coordinatorRssMaxMiB: mb(res.rssMaxBytes),
    apiProbe: lat,
    sqlite: {
      eventsAppended: events,
      eventsPerSec: Math.round(events / secs),
      eventTypes: Object.fromEntries(rows.slice(0, 8).map((r) => [r.type, r.n])),
      bytesWrittenMiB: io0 && io1 ? mb(io1.writeBytes - io0.writeBytes) : null,
      writeMiBPerSec: io0 && io1 ? round((io1.writeBytes - io0.writeBytes) / (1024 * 1024) / secs, 2) : null,
      writeSyscallsPerSec: io0 && io1 ? Math.round((io1.syscw - io0.syscw) / secs) : null,
    },
  };
  result.coordinatorDispatch = dispatchLog(path.join(dir, 'coordinator.log'), id);
  return result;
}

/**
 * The rounds as one row: each figure the median over the rounds, with its min–max in `spread`
 * (the rule for a p99 on shared cores: the median of several runs, not the best one).
 */
function medianRollout(rounds) {
  const pick = {
    makespanMs: (o) => o.makespanMs,
    ratioToIdeal: (o) => o.ratioToIdeal,
    p50: (o) => o.dispatchLatencyMs.p50,
    p90: (o) => o.dispatchLatencyMs.p90,
    p99: (o) => o.dispatchLatencyMs.p99,
    max: (o) => o.dispatchLatencyMs.max,
    loadgenLagP99: (o) => o.loadgenLoopLagMs.p99,
    loadgenLagMax: (o) => o.loadgenLoopLagMs.max,
    coordinatorCpuPct: (o) => o.coordinatorCpuPct,
  };
  const m = {};
  const spread = {};
  for (const [k, f] of Object.entries(pick)) {
    const xs = rounds.map(f).filter((x) => x != null);
    m[k] = xs.length ? round(median(xs), 3) : null;
    spread[k] = xs.length ? [Math.min(...xs), Math.max(...xs)] : null;
  }
  // The round whose p99 is the median carries the figures that are not medians (SQLite, API probe, the largest wave).
  const mid = [...rounds].sort((a, b) => a.dispatchLatencyMs.p99 - b.dispatchLatencyMs.p99)[Math.floor((rounds.length - 1) / 2)];
  return {
    ...mid,
    rounds: rounds.length,
    makespanMs: m.makespanMs,
    ratioToIdeal: m.ratioToIdeal,
    dispatchLatencyMs: { p50: m.p50, p90: m.p90, p99: m.p99, max: m.max },
    loadgenLoopLagMs: { p99: m.loadgenLagP99, max: m.loadgenLagMax },
    coordinatorCpuPct: m.coordinatorCpuPct,
    spread,
  };
}
