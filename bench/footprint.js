/**
 * 4a. Agent footprint at rest: the real agent daemon (`guts-upgrade-agent run`)
 * connected to the real coordinator, its simulator node running, sampled from
 * /proc for 60 s (10 s in quick mode). The backup peak (4b) is measured on the
 * agent's upgrade process in data.js.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import * as sim from '@guts-upgrade/simulator';
import { childEnv, mb, registerNodes, removeDir, round, sampler, sleep, startCoordinator, stopChild, tmpDir, track, waitFor } from './lib/common.js';
import { ready, startNode, stopNode } from './data.js';
import { agentRuntime } from './lib/agent-runtime.js';

export async function footprintBench({ quick, log }) {
  const seconds = quick ? 10 : 60;
  const dir = tmpDir('footprint');
  const coord = await startCoordinator(dir, { heartbeat: { intervalMs: 5000, timeoutMs: 15000 }, tickMs: 500 });
  let node = null;
  let agent = null;
  let bare = null;
  let modules = null;
  try {
    const manifest = sim.buildArtifacts({ outDir: path.join(dir, 'artifacts') });
    const [d] = await sim.createCluster({ n: 1, dir: path.join(dir, 'cluster'), logLevel: 'warn', dataSizeMb: 16 });
    const stateDir = path.join(d.dir, 'agent-state');
    fs.mkdirSync(stateDir, { recursive: true });
    node = {
      ...d,
      binary: path.join(d.dir, 'bin', 'guts-node'),
      stateDir,
      pidFile: path.join(stateDir, 'guts-node.pid'),
      logFile: path.join(stateDir, 'guts-node.log'),
    };
    sim.installBinary(sim.findArtifact(manifest, '1.0.0').path, node.binary);
    await startNode(node);
    await waitFor(() => ready(node), { timeoutMs: 60_000, what: 'node ready' });
    const tokens = await registerNodes(coord, [d.name]);
    const cfgPath = path.join(d.dir, 'agent.yaml');
    fs.writeFileSync(
      cfgPath,
      stringify({
        nodeId: d.name,
        coordinator: { url: coord.wsUrl, token: tokens[d.name], reconnectMaxMs: 2000 },
        service: { driver: 'process', args: ['--config', '{config}'], pidFile: node.pidFile, logFile: node.logFile },
        node: { binary: node.binary, dataDir: d.dataDir, config: d.configPath, apiUrl: d.apiUrl, metricsUrl: d.metricsUrl },
        stateDir,
        logLevel: 'info',
      }),
    );
    const rt = await agentRuntime(log);
    const out = fs.openSync(path.join(stateDir, 'agent.log'), 'a');
    const flags = (process.env.BENCH_AGENT_NODE_FLAGS ?? '').split(' ').filter(Boolean);
    agent = track(spawn(rt.node, [...flags, rt.cli, 'run', '--config', cfgPath], { env: childEnv(), stdio: ['ignore', out, out] }));
    fs.closeSync(out);
    await waitFor(
      async () => {
        const f = await coord.api('GET', '/api/v1/nodes');
        return f.nodes[0]?.connected && f.nodes[0]?.healthy;
      },
      { timeoutMs: 60_000, what: 'agent connected and node healthy' },
    );
    // Two floors beside it, sampled over the same seconds with the same runtime and flags: the runtime
    // doing nothing, and the runtime holding just what an idle daemon cannot do without (the ws client
    // with its TLS and HTTP modules, node:http for the node's API, better-sqlite3 with a database open
    // for the journal). The agent's own share is what lies above the second.
    bare = track(spawn(rt.node, [...flags, '-e', 'setInterval(() => {}, 1 << 30)'], { env: childEnv(), stdio: 'ignore' }));
    modules = track(spawn(rt.node, [...flags, '-e', modulesFloor(rt.cli)], { env: childEnv(), stdio: 'ignore' }));
    await sleep(3000); // past start-up work (JIT, first heartbeats)
    log(`footprint: sampling the idle agent daemon and its two floors for ${seconds} s`);
    const smp = sampler(agent.pid, 1000);
    const bareSmp = sampler(bare.pid, 1000);
    const modulesSmp = sampler(modules.pid, 1000);
    await sleep(seconds * 1000);
    const r = smp.stop();
    const b = bareSmp.stop();
    const m = modulesSmp.stop();
    return {
      title: `Agent daemon footprint, idle (connected, node running) over ${seconds} s`,
      runtime: rt.label,
      idle: {
        seconds: round(r.wallSec, 1),
        cpuPct: round(r.cpuPct, 2),
        cpuSec: round(r.cpuSec, 2),
        rssMeanMiB: mb(r.rssMeanBytes),
        rssMaxMiB: mb(r.rssMaxBytes),
        peakRssMiB: mb(r.peakRssBytes),
        ...rssParts(r),
      },
      bareRuntime: { cpuPct: round(b.cpuPct, 2), rssMeanMiB: mb(b.rssMeanBytes), ...rssParts(b) },
      rssRatioToBare: round(r.rssMeanBytes / b.rssMeanBytes, 2),
      modulesFloor: { cpuPct: round(m.cpuPct, 2), rssMeanMiB: mb(m.rssMeanBytes), ...rssParts(m) },
      rssRatioToModulesFloor: round(r.rssMeanBytes / m.rssMeanBytes, 2),
    };
  } finally {
    if (agent) await stopChild(agent, 10_000);
    if (bare) await stopChild(bare, 5000);
    if (modules) await stopChild(modules, 5000);
    if (node) await stopNode(node).catch(() => undefined);
    await coord.stop();
    removeDir(dir);
  }
}

/** Where a sampled RSS lies: the process's own (anonymous) memory and the file pages it maps (the runtime's code). */
function rssParts(s) {
  return { anonMeanMiB: s.anonMeanBytes == null ? null : mb(s.anonMeanBytes), fileMeanMiB: s.fileMeanBytes == null ? null : mb(s.fileMeanBytes) };
}

/** The script of the second floor: better-sqlite3 as the agent resolves it (built for its runtime), ws from this workspace. */
function modulesFloor(agentCli) {
  const sqlite = createRequire(agentCli).resolve('better-sqlite3');
  const ws = createRequire(import.meta.url).resolve('ws');
  return [
    `require(${JSON.stringify(ws)});`,
    "require('node:http');",
    `const db = new (require(${JSON.stringify(sqlite)}))(':memory:');`,
    "db.prepare('select 1').get();",
    'setInterval(() => {}, 1 << 30);',
  ].join(' ');
}
