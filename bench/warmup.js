/**
 * 6. What a node's warm-up costs an upgrade: per-node downtime and verify time
 * when the restarted node comes back instantly, side by side with one that
 * warms up like a real node (storage opens, the engine says Starting, its
 * peers connect one by one), in the same run, on the same network.
 *
 * A 4-validator simulator network; the real agent CLI `upgrade` (process
 * driver) takes v0 from 1.0.0 to 1.0.1 (no migration), once per profile per
 * round, the profiles interleaved so machine noise spreads over all of them.
 * Before each upgrade v0 is put back on 1.0.0 with the profile's settings
 * (not timed). Downtime is the agent's own stop → ready figure; verify is the
 * agent's verify step (progress lines "verify started" → "verify done").
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import * as sim from '@guts-upgrade/simulator';
import { AGENT_CLI, SIM_CLI, childEnv, removeDir, round, run, stopChild, tmpDir, track, waitFor } from './lib/common.js';
import { ready, startNode, stopNode } from './data.js';
import { agentResult } from './lib/agent-runtime.js';

const TIMINGS = { startup_delay_ms: 100, migrate_ms: 100, block_interval_ms: 250, leader_term_ms: 1500, sync_blocks_per_sec: 500 };

export const PROFILES = [
  {
    name: 'instant',
    what: 'ready, Active and connected at once (the simulator before)',
    sim: { storage_open_ms: 0, consensus_start_ms: 0, p2p_warmup_ms: 0, p2p_report: 'unknown' },
  },
  {
    name: 'warm-up, p2p unknown',
    what: "today's guts-node: storage 1 s, Starting 1 s, peers connect over 5 s, p2p never reported",
    sim: { storage_open_ms: 1000, consensus_start_ms: 1000, p2p_warmup_ms: 5000, p2p_report: 'unknown' },
  },
  {
    name: 'warm-up, peers reported',
    what: 'a future node: the same warm-up, /health p2p up with peer_count rising 1 → 3',
    sim: { storage_open_ms: 1000, consensus_start_ms: 1000, p2p_warmup_ms: 5000, p2p_report: 'reported' },
  },
];

const CHECKS = {
  readyTimeoutMs: 60_000,
  versionTimeoutMs: 30_000,
  consensusTimeoutMs: 30_000,
  peersTimeoutMs: 30_000,
  advanceTimeoutMs: 30_000,
  minPeers: 2,
  syncTimeoutMs: 30_000,
  advanceWindowMs: 1500,
  stabilizeMs: 500,
  httpTimeoutMs: 2000,
  commandTimeoutMs: 30_000,
};

async function setup(log) {
  const dir = tmpDir('warmup');
  const manifest = sim.buildArtifacts({ outDir: path.join(dir, 'artifacts') });
  const server = await sim.startArtifactServer({ dir: path.join(dir, 'artifacts'), host: '127.0.0.1' });
  // Signed or nothing, as on a validator host: the agent resolves versions through this repository.
  const releases = sim.createReleaseSigner(path.join(dir, 'artifacts', 'release'));
  const descs = await sim.createCluster({ n: 4, dir: path.join(dir, 'cluster'), timings: TIMINGS, dataSizeMb: 1, dataVersion: '1.0.0', logLevel: 'warn' });
  const [d, ...others] = descs;
  const peers = others.map((o) => track(spawn(process.execPath, [SIM_CLI, '--config', o.configPath], { env: childEnv(), stdio: 'ignore' })));
  const stateDir = path.join(d.dir, 'agent-state');
  fs.mkdirSync(stateDir, { recursive: true });
  const node = {
    ...d,
    binary: path.join(d.dir, 'bin', 'guts-node'),
    stateDir,
    pidFile: path.join(stateDir, 'guts-node.pid'),
    logFile: path.join(stateDir, 'guts-node.log'),
    agentConfig: path.join(d.dir, 'agent.yaml'),
  };
  sim.installBinary(sim.findArtifact(manifest, '1.0.0').path, node.binary);
  fs.writeFileSync(
    node.agentConfig,
    stringify({
      nodeId: d.name,
      service: { driver: 'process', args: ['--config', '{config}'], stopTimeoutMs: 10_000, pidFile: node.pidFile, logFile: node.logFile },
      node: { binary: node.binary, dataDir: d.dataDir, config: d.configPath, apiUrl: d.apiUrl, metricsUrl: d.metricsUrl },
      stateDir,
      backup: { retention: 1 },
      release: { repository: `${server.url}/release`, root: releases.root },
      fetch: { retries: 3, backoffMs: 50, timeoutMs: 10_000 },
      checks: CHECKS,
      diskMarginBytes: 0,
      logLevel: 'warn',
    }),
  );
  await startNode(node);
  await waitFor(() => ready(node), { timeoutMs: 60_000, what: 'v0 ready' });
  await waitFor(async () => Math.min(...(await sim.clusterHeights(descs)).map((h) => h ?? -1)) >= 3, {
    timeoutMs: 60_000,
    what: 'the 4-validator chain finalizing',
  });
  log('warmup: 4-validator network up');
  const art = (v) => {
    const a = sim.findArtifact(manifest, v);
    releases.sign(a.path, v);
    return { version: v, url: `${server.url}/${a.file}`, sha256: a.sha256, path: a.path };
  };
  return { dir, node, descs, peers, server, art };
}

/** v0 back on 1.0.0 with the profile's settings, ready and caught up (not timed). */
async function reset(env, profile) {
  const { node, descs, art } = env;
  await stopNode(node);
  sim.installBinary(art('1.0.0').path, node.binary);
  const cfg = parse(fs.readFileSync(node.configPath, 'utf8'));
  cfg.sim = { ...cfg.sim, ...profile.sim };
  fs.writeFileSync(node.configPath, stringify(cfg));
  await startNode(node);
  await waitFor(
    async () => {
      const hs = (await sim.clusterHeights(descs)).map((h) => h ?? -1);
      return (await ready(node)) && hs[0] >= Math.max(...hs.slice(1)) - 2;
    },
    { timeoutMs: 60_000, what: 'v0 back on 1.0.0 and caught up' },
  );
}

async function upgrade(env) {
  const { node, descs, art } = env;
  const to = art('1.0.1');
  const t0 = Date.now();
  const r = await run(process.execPath, [AGENT_CLI, 'upgrade', '--config', node.agentConfig, '--to', to.version, '--json'], {});
  const t1 = Date.now();
  const result = agentResult(r, 'agent upgrade');
  const at = (step, state) => {
    const m = new RegExp(`^\\[([^\\]]+)\\] ${step}\\s+${state}`, 'm').exec(r.stderr);
    return m ? Date.parse(m[1]) : null;
  };
  const check = (name) => result.evidence.checks.find((c) => c.name === name) ?? {};
  // The other validators' finalization while v0 was upgraded: the longest gap between blocks.
  const others = sim.readHistory(descs.slice(1).map((d) => d.historyFile));
  return {
    downtimeMs: result.downtimeMs,
    verifyMs: at('verify', 'done') && at('verify', 'started') ? at('verify', 'done') - at('verify', 'started') : null,
    totalMs: t1 - t0,
    runningVersionWaitMs: check('running-version').waitedMs ?? null,
    consensusWaitMs: check('consensus').waitedMs ?? null,
    consensusLast: check('consensus').last ?? null,
    peersWaitMs: check('peers').waitedMs ?? null,
    peers: check('peers').last ?? null,
    peersMeasured: check('peers').measured !== false,
    advanceWaitMs: check('height-advancing').waitedMs ?? null,
    chainMaxGapMs: sim.maxStallMs(others, { from: t0, to: t1 }),
  };
}

const median = (xs) => {
  const v = xs.filter((x) => x != null).sort((a, b) => a - b);
  return v.length ? v[Math.floor((v.length - 1) / 2)] : null;
};

export async function warmupBench({ quick, log }) {
  const rounds = quick ? 1 : 3;
  const env = await setup(log);
  const runs = Object.fromEntries(PROFILES.map((p) => [p.name, []]));
  try {
    for (let i = 0; i < rounds; i++) {
      for (const p of PROFILES) {
        await reset(env, p);
        log(`warmup: round ${i + 1}/${rounds}, ${p.name}: agent CLI upgrade 1.0.0 -> 1.0.1`);
        const x = await upgrade(env);
        runs[p.name].push(x);
        log(`  downtime ${x.downtimeMs} ms, verify ${x.verifyMs} ms, peers ${x.peers}`);
      }
    }
  } finally {
    await stopNode(env.node).catch(() => undefined);
    await Promise.all(env.peers.map((c) => stopChild(c)));
    await env.server.close().catch(() => undefined);
    removeDir(env.dir);
  }
  const base = median(runs.instant.map((x) => x.verifyMs));
  const rows = PROFILES.map((p) => {
    const xs = runs[p.name];
    const m = (k) => median(xs.map((x) => x[k]));
    return {
      profile: p.name,
      what: p.what,
      rounds: xs.length,
      downtimeMs: m('downtimeMs'),
      verifyMs: m('verifyMs'),
      totalMs: m('totalMs'),
      consensusWaitMs: m('consensusWaitMs'),
      peersWaitMs: m('peersWaitMs'),
      advanceWaitMs: m('advanceWaitMs'),
      runningVersionWaitMs: m('runningVersionWaitMs'),
      peers: xs.map((x) => (x.peersMeasured ? x.peers : 'not reported'))[0] ?? null,
      consensusLast: xs[0]?.consensusLast ?? null,
      chainMaxGapMs: Math.max(...xs.map((x) => x.chainMaxGapMs)),
      verifyOverInstant: base ? round(m('verifyMs') / base, 2) : null,
      runs: xs,
    };
  });
  return {
    title: 'Per-node downtime and verify time: a node that warms up vs one that is back at once',
    settings: { timings: TIMINGS, checks: CHECKS, network: '4 validators, v0 upgraded by the agent CLI, 1.0.0 -> 1.0.1' },
    rows,
  };
}
