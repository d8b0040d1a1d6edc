/**
 * A simulated validator fleet on loopback for the demo and the integration
 * tests: simulator nodes (run detached with a pid file, as the agent's process
 * driver expects), an artifact server, and one real agent CLI process per node.
 *
 * The agent runs as its own process from the bin its package declares, as on
 * a real host; only its process-identity helper is imported, so the pid files
 * written here are the ones its process driver adopts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { stringify } from 'yaml';
import { processStartTime } from '@guts-upgrade/agent/process-identity';
import {
  buildArtifacts,
  createCluster,
  findArtifact,
  installBinary,
  maxStallMs,
  readHistory,
  startArtifactServer,
  type Fault,
  type HistoryEntry,
  type NodeDescriptor,
  type SimTimings,
} from '@guts-upgrade/simulator';
import { startReaper } from './reaper.js';

// Fast enough for a demo and tests, slow enough that seven nodes polling their
// peers (every block interval, 100-250 ms) leave a 2-core machine room for
// the agents: at 100 ms blocks a 7-node fleet saturated it.
export const FAST_TIMINGS: Partial<SimTimings> = {
  startup_delay_ms: 100,
  migrate_ms: 100,
  block_interval_ms: 250,
  leader_term_ms: 1500,
  fault_delay_ms: 200,
  sync_blocks_per_sec: 500,
  // A restarted node warms up as a real one does, only shorter: storage opens,
  // the engine says Starting, then its peers connect one by one (reported in
  // /health as a future guts-node would) over two seconds.
  storage_open_ms: 200,
  consensus_start_ms: 500,
  p2p_warmup_ms: 2000,
  p2p_report: 'reported',
};

/** The agent CLI, found through the bin its package declares (what a package install puts on PATH). */
export function agentCliPath(): string {
  const require = createRequire(import.meta.url);
  const manifest = require.resolve('@guts-upgrade/agent/package.json');
  const pkg = JSON.parse(readFileSync(manifest, 'utf8')) as { bin: Record<string, string> };
  return join(dirname(manifest), pkg.bin['guts-upgrade-agent']!);
}

function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_OPTIONS; // test-runner loader hooks must not leak into real children
  for (const k of Object.keys(env)) if (k.startsWith('GUTS_UPGRADE_') || k.startsWith('TAP')) delete env[k];
  return env;
}

export interface FleetNode extends NodeDescriptor {
  id: string;
  binary: string;
  agentConfig: string;
  stateDir: string;
  pidFile: string;
  agent: ChildProcess | null;
}

export interface SimFleet {
  dir: string;
  nodes: FleetNode[];
  artifactUrl: string;
  artifact(version: string, fault?: Fault): { version: string; url: string; sha256: string };
  startAgent(node: FleetNode): void;
  stopAgent(node: FleetNode, signal?: NodeJS.Signals): Promise<void>;
  /** Another process to kill if the owner dies before close() (the integration harness's coordinator). */
  track(pid: number): void;
  history(): HistoryEntry[];
  maxStallMs(range?: { from?: number; to?: number }): number;
  close(): Promise<void>;
}

export async function startSimFleet(opts: {
  n: number;
  dir: string;
  coordinatorWsUrl: string;
  tokens: Record<string, string>;
  timings?: Partial<SimTimings>;
  agentChecks?: Record<string, number>;
  logLevel?: string;
}): Promise<SimFleet> {
  mkdirSync(opts.dir, { recursive: true });
  const reaper = startReaper(join(opts.dir, 'reap.list'));
  const manifest = buildArtifacts({ outDir: join(opts.dir, 'artifacts') });
  const server = await startArtifactServer({ dir: join(opts.dir, 'artifacts') });
  const descs = await createCluster({
    n: opts.n,
    dir: join(opts.dir, 'cluster'),
    timings: { ...FAST_TIMINGS, ...(opts.timings ?? {}) },
    dataSizeMb: 1,
    dataVersion: '1.0.0',
    logLevel: 'warn',
  });
  const nodes: FleetNode[] = [];
  const started: number[] = [];
  const cleanup = async () => {
    for (const n of nodes) {
      if (n.agent && n.agent.exitCode === null && n.agent.signalCode === null) {
        n.agent.kill('SIGKILL');
        await new Promise((r) => n.agent!.once('exit', r));
      }
    }
    for (const n of nodes) {
      let pid: number | null = null;
      try {
        pid = Number(readFileSync(n.pidFile, 'utf8').trim().split(/\s+/)[0]);
      } catch {
        /* no pid file */
      }
      for (const p of new Set([pid, ...started].filter((x): x is number => !!x))) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    await server.close().catch(() => undefined);
    reaper.release();
  };
  try {
    for (const d of descs) {
      const stateDir = join(d.dir, 'agent-state');
      const binary = join(d.dir, 'bin', 'guts-node');
      installBinary(findArtifact(manifest, '1.0.0').path, binary);
      const pidFile = join(stateDir, 'guts-node.pid');
      const logFile = join(stateDir, 'guts-node.log');
      mkdirSync(stateDir, { recursive: true });
      const agentConfig = join(d.dir, 'agent.yaml');
      writeFileSync(
        agentConfig,
        stringify({
          nodeId: d.name,
          coordinator: { url: opts.coordinatorWsUrl, token: opts.tokens[d.name], reconnectMaxMs: 500 },
          service: { driver: 'process', args: ['--config', '{config}'], stopTimeoutMs: 5000, pidFile, logFile },
          node: { binary, dataDir: d.dataDir, config: d.configPath, apiUrl: d.apiUrl, metricsUrl: d.metricsUrl },
          stateDir,
          backup: { retention: 2 },
          fetch: { retries: 3, backoffMs: 50, timeoutMs: 5000 },
          // Generous timeouts: the demo and the integration tests share a 2-core machine with other work.
          checks: {
            readyTimeoutMs: 20_000,
            versionTimeoutMs: 20_000,
            consensusTimeoutMs: 20_000,
            peersTimeoutMs: 20_000,
            advanceTimeoutMs: 30_000,
            minPeers: 2,
            syncTimeoutMs: 30_000,
            advanceWindowMs: 1500,
            stabilizeMs: 500,
            httpTimeoutMs: 3000,
            commandTimeoutMs: 30_000,
            ...(opts.agentChecks ?? {}),
          },
          commands: { migrate: ['{binary}', 'migrate', '--from', '{from}', '--to', '{to}', '--data-dir', '{dataDir}'] },
          diskMarginBytes: 0,
          logLevel: opts.logLevel ?? 'warn',
        }),
      );
      // Start the node the way the agent's process driver does, so the agent adopts it.
      const log = openSync(logFile, 'a');
      const child = spawn(binary, ['--config', d.configPath], { detached: true, stdio: ['ignore', log, log], env: childEnv(), cwd: dirname(d.configPath) });
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', () => resolve());
        child.once('error', reject);
      });
      closeSync(log);
      started.push(child.pid!);
      writeFileSync(pidFile, `${child.pid} ${processStartTime(child.pid!)}\n`);
      reaper.track(child.pid!);
      reaper.trackPidFile(pidFile);
      child.unref();
      nodes.push({ ...d, id: d.name, binary, agentConfig, stateDir, pidFile, agent: null });
    }
    for (const n of nodes) {
      const end = Date.now() + 20_000;
      for (;;) {
        const ok = await fetch(`${n.apiUrl}/health/ready`).then(
          (r) => r.status === 200,
          () => false,
        );
        if (ok) break;
        if (Date.now() > end) throw new Error(`${n.id} did not become ready`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } catch (err) {
    await cleanup();
    throw err;
  }
  const fleet: SimFleet = {
    dir: opts.dir,
    nodes,
    artifactUrl: server.url,
    artifact(version, fault = 'none') {
      const a = findArtifact(manifest, version, fault);
      return { version, url: `${server.url}/${a.file}`, sha256: a.sha256 };
    },
    startAgent(n) {
      const out = openSync(join(n.stateDir, 'agent.log'), 'a');
      n.agent = spawn(process.execPath, [agentCliPath(), 'run', '--config', n.agentConfig], { env: childEnv(), stdio: ['ignore', out, out] });
      closeSync(out);
      reaper.track(n.agent.pid!);
    },
    async stopAgent(n, signal = 'SIGTERM') {
      const a = n.agent;
      if (!a || a.exitCode !== null || a.signalCode !== null) return;
      const exited = new Promise((r) => a.once('exit', r));
      a.kill(signal);
      // SIGTERM lets the agent finish its command first (systemd gives it 15 min); a minute is plenty here.
      const timer = setTimeout(() => a.kill('SIGKILL'), signal === 'SIGKILL' ? 0 : 60_000);
      await exited;
      clearTimeout(timer);
    },
    track(pid) {
      reaper.track(pid);
    },
    history() {
      return readHistory(nodes.map((n) => n.historyFile));
    },
    maxStallMs(range) {
      return maxStallMs(fleet.history(), range);
    },
    async close() {
      await cleanup();
    },
  };
  for (const n of nodes) fleet.startAgent(n);
  return fleet;
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
