/**
 * A simulated validator fleet on loopback for the demo and the integration
 * tests: simulator nodes (run detached with a pid file, as the agent's process
 * driver expects), an artifact server, and one real agent CLI process per node.
 *
 * The agent runs as its own process from the bin its package declares, as on
 * a real host; only its process-identity helper is imported, so the pid files
 * written here are the ones its process driver adopts.
 *
 * For the chain's rules: validators may carry weights, some may run with no
 * agent (another operator's nodes: `unmanaged`), the set may change at run
 * time (`setEpoch`), and one agent may be made to lie (`liar`, a test double).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { stringify } from 'yaml';
import { processStartTime } from '@guts-upgrade/agent/process-identity';
import {
  buildArtifacts,
  createReleaseSigner,
  createCluster,
  findArtifact,
  installBinary,
  maxStallMs,
  readHistory,
  setNodeEpoch,
  startArtifactServer,
  type Fault,
  type HistoryEntry,
  type NodeDescriptor,
  type SimTimings,
} from '@guts-upgrade/simulator';
import { type Lies, type LyingProxy, startLyingProxy } from './liar.js';
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
  /** The agent's config file (for an unmanaged node: none is written; the path is unused). */
  agentConfig: string;
  stateDir: string;
  pidFile: string;
  agent: ChildProcess | null;
  /** Whether an agent manages this node (false: another operator's validator). */
  managed: boolean;
  /** Genesis voting weight (0 for a follower). */
  weight: number;
  /** A validator, or a follower: a full node outside the set (role: follower in its config and its agent's). */
  role: 'validator' | 'follower';
}

export interface SimFleet {
  dir: string;
  /** The managed nodes, each with an agent: the validators v0..v{n-1}, then the followers f0.. if any. */
  nodes: FleetNode[];
  /** Validators in the set with no agent (v{n}..): started, never upgraded. */
  unmanaged: FleetNode[];
  /** The lying agent's node and the proxy its agent reads, when `liar` was given. */
  liar: { node: FleetNode; url: string } | null;
  artifactUrl: string;
  artifact(version: string, fault?: Fault): { version: string; url: string; sha256: string };
  startAgent(node: FleetNode): void;
  stopAgent(node: FleetNode, signal?: NodeJS.Signals): Promise<void>;
  /**
   * Stops a node's guts-node process (SIGTERM, SIGKILL after 10 s). Meant for
   * unmanaged nodes; on a managed one it goes behind its agent's back, as a crash would.
   */
  stopNode(node: FleetNode, signal?: NodeJS.Signals): Promise<void>;
  /** Starts a stopped node again (the same binary and config) and waits until it is ready. */
  startNode(node: FleetNode): Promise<void>;
  /**
   * A new epoch on every running node (POST /sim/epoch): `weights` (and
   * `active`, default weight > 0) for all validators, managed then unmanaged,
   * in validator order. A node that is down adopts it from its peers when it
   * comes back. Throws if a running node refuses it (a stale or conflicting epoch).
   */
  setEpoch(epoch: number, weights: number[], active?: boolean[]): Promise<{ set: string[]; unreachable: string[] }>;
  /** Another process to kill if the owner dies before close() (the integration harness's coordinator). */
  track(pid: number): void;
  history(): HistoryEntry[];
  maxStallMs(range?: { from?: number; to?: number }): number;
  close(): Promise<void>;
}

export interface SimFleetOptions {
  /** Managed validators (each with an agent): v0..v{n-1}. */
  n: number;
  dir: string;
  coordinatorWsUrl: string;
  /** Agent tokens by node id (managed nodes only). */
  tokens: Record<string, string>;
  timings?: Partial<SimTimings>;
  agentChecks?: Record<string, number>;
  logLevel?: string;
  /** Genesis weights of all n + unmanaged validators, in order (default 1 each). */
  weights?: number[];
  /** Extra validators with no agent, v{n}..v{n+unmanaged-1}, started with the others. */
  unmanaged?: number;
  /**
   * Follower nodes f0..f{followers-1}: full nodes outside the validator set, each with an
   * agent configured `role: follower` (tokens by their ids), listed after the validators.
   */
  followers?: number;
  /**
   * A managed node whose agent lies (TEST DOUBLE, see liar.ts): its agent reads the
   * node through a proxy claiming height 10^12 (+ real), view 10^9 (+ real),
   * is_leader and itself as current leader. An id, or the id with lie options.
   */
  liar?: string | ({ id: string } & Partial<Omit<Lies, 'pubkey'>>);
}

export async function startSimFleet(opts: SimFleetOptions): Promise<SimFleet> {
  const unmanagedCount = opts.unmanaged ?? 0;
  const total = opts.n + unmanagedCount;
  if (!Number.isInteger(unmanagedCount) || unmanagedCount < 0) throw new RangeError('unmanaged must be a non-negative integer');
  if (opts.weights && opts.weights.length !== total)
    throw new RangeError(`weights must list all ${total} validators (n + unmanaged), got ${opts.weights.length}`);
  const liarOpts = typeof opts.liar === 'string' ? { id: opts.liar } : opts.liar;
  mkdirSync(opts.dir, { recursive: true });
  const reaper = startReaper(join(opts.dir, 'reap.list'));
  const manifest = buildArtifacts({ outDir: join(opts.dir, 'artifacts') });
  const server = await startArtifactServer({ dir: join(opts.dir, 'artifacts') });
  // Agents trust only this repository's pinned root, as on a validator host (never allowUnsigned).
  const releases = createReleaseSigner(join(opts.dir, 'artifacts', 'release'));
  const descs = await createCluster({
    n: total,
    dir: join(opts.dir, 'cluster'),
    timings: { ...FAST_TIMINGS, ...(opts.timings ?? {}) },
    dataSizeMb: 1,
    dataVersion: '1.0.0',
    logLevel: 'warn',
    ...(opts.weights ? { weights: opts.weights } : {}),
    followers: Array.from({ length: opts.followers ?? 0 }, (_, i) => `f${i}`),
  });
  if (liarOpts && !descs.slice(0, opts.n).some((d) => d.name === liarOpts.id))
    throw new RangeError(`liar ${liarOpts.id} is not a managed node (v0..v${opts.n - 1})`);
  const nodes: FleetNode[] = [];
  const unmanaged: FleetNode[] = [];
  const started: number[] = [];
  let proxy: LyingProxy | null = null;
  /** Starts a node detached, as the agent's process driver does, so an agent adopts it. */
  const launch = async (n: Pick<FleetNode, 'binary' | 'configPath' | 'pidFile' | 'stateDir'>) => {
    const log = openSync(join(n.stateDir, 'guts-node.log'), 'a');
    const child = spawn(n.binary, ['--config', n.configPath], { detached: true, stdio: ['ignore', log, log], env: childEnv(), cwd: dirname(n.configPath) });
    try {
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', () => resolve());
        child.once('error', reject);
      });
    } finally {
      closeSync(log);
    }
    started.push(child.pid!);
    writeFileSync(n.pidFile, `${child.pid} ${processStartTime(child.pid!)}\n`);
    reaper.track(child.pid!);
    reaper.trackPidFile(n.pidFile);
    child.unref();
  };
  const waitReady = async (n: FleetNode) => {
    const end = Date.now() + 20_000;
    for (;;) {
      const ok = await fetch(`${n.apiUrl}/health/ready`).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) return;
      if (Date.now() > end) throw new Error(`${n.id} did not become ready`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const cleanup = async () => {
    for (const n of nodes) {
      if (n.agent && n.agent.exitCode === null && n.agent.signalCode === null) {
        n.agent.kill('SIGKILL');
        await new Promise((r) => n.agent!.once('exit', r));
      }
    }
    for (const n of [...nodes, ...unmanaged]) {
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
    await proxy?.close().catch(() => undefined);
    reaper.release();
  };
  try {
    for (const [i, d] of descs.entries()) {
      const follower = i >= total;
      const managed = i < opts.n || follower;
      const stateDir = join(d.dir, 'agent-state');
      const binary = join(d.dir, 'bin', 'guts-node');
      installBinary(findArtifact(manifest, '1.0.0').path, binary);
      const pidFile = join(stateDir, 'guts-node.pid');
      const logFile = join(stateDir, 'guts-node.log');
      mkdirSync(stateDir, { recursive: true });
      const agentConfig = join(d.dir, 'agent.yaml');
      const role = follower ? 'follower' : 'validator';
      const node: FleetNode = {
        ...d,
        id: d.name,
        binary,
        agentConfig,
        stateDir,
        pidFile,
        agent: null,
        managed,
        weight: follower ? 0 : (opts.weights?.[i] ?? 1),
        role,
      };
      if (managed) {
        let apiUrl = d.apiUrl;
        if (liarOpts?.id === d.name) {
          proxy = await startLyingProxy(d.apiUrl, { ...liarOpts, pubkey: d.pubkey });
          apiUrl = proxy.url;
        }
        writeFileSync(
          agentConfig,
          stringify({
            nodeId: d.name,
            role,
            // A follower's own key: the coordinator checks the chain's set does not hold it.
            validatorPubkey: d.pubkey,
            coordinator: { url: opts.coordinatorWsUrl, token: opts.tokens[d.name], reconnectMaxMs: 500 },
            service: { driver: 'process', args: ['--config', '{config}'], stopTimeoutMs: 5000, pidFile, logFile },
            node: { binary, dataDir: d.dataDir, config: d.configPath, apiUrl, metricsUrl: d.metricsUrl },
            stateDir,
            backup: { retention: 2 },
            release: { repository: `${server.url}/release`, root: releases.root },
            fetch: { retries: 3, backoffMs: 50, timeoutMs: 5000 },
            // Generous timeouts: the demo and the integration tests share a 2-core machine with other work.
            checks: {
              readyTimeoutMs: 20_000,
              versionTimeoutMs: 20_000,
              consensusTimeoutMs: 20_000,
              peersTimeoutMs: 20_000,
              advanceTimeoutMs: 30_000,
              // Two peers, or every peer there is: a follower's peers are the validators, a validator's the others.
              minPeers: Math.min(2, follower ? total : total - 1),
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
      }
      await launch(node);
      (managed ? nodes : unmanaged).push(node);
    }
    for (const n of [...nodes, ...unmanaged]) await waitReady(n);
  } catch (err) {
    await cleanup();
    throw err;
  }
  const liarNode = liarOpts ? nodes.find((n) => n.id === liarOpts.id)! : null;
  const fleet: SimFleet = {
    dir: opts.dir,
    nodes,
    unmanaged,
    liar: liarNode && proxy ? { node: liarNode, url: (proxy as LyingProxy).url } : null,
    artifactUrl: server.url,
    artifact(version, fault = 'none') {
      const a = findArtifact(manifest, version, fault);
      // The build a test names is what its release owners signed as that version (a bad build too).
      releases.sign(a.path, version);
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
    async stopNode(n, signal = 'SIGTERM') {
      let pid: number;
      try {
        pid = Number(readFileSync(n.pidFile, 'utf8').trim().split(/\s+/)[0]);
      } catch {
        return;
      }
      const alive = () => {
        try {
          process.kill(pid, 0);
          return true;
        } catch {
          return false;
        }
      };
      if (!pid || !alive()) return;
      process.kill(pid, signal);
      const end = Date.now() + 10_000;
      while (alive()) {
        if (Date.now() > end) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async startNode(n) {
      await launch(n);
      await waitReady(n);
    },
    async setEpoch(epoch, weights, active) {
      const set: string[] = [];
      const unreachable: string[] = [];
      await Promise.all(
        [...nodes, ...unmanaged].map(async (n) => {
          const r = await setNodeEpoch(n, epoch, weights, active);
          if (!r || r.status === 503) {
            unreachable.push(n.id);
            return;
          }
          if (r.status !== 200) throw new Error(`${n.id} refused epoch ${epoch}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
          set.push(n.id);
        }),
      );
      return { set: set.sort(), unreachable: unreachable.sort() };
    },
    track(pid) {
      reaper.track(pid);
    },
    history() {
      return readHistory([...nodes, ...unmanaged].map((n) => n.historyFile));
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
