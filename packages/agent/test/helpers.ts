/** Shared test rig: temp dir, simulator artifacts + server, a node run by the process driver, the agent CLI as a child. */
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import {
  buildArtifacts,
  CLI_JS,
  createCluster,
  createReleaseSigner,
  findArtifact,
  installBinary,
  spawnNode,
  startArtifactServer,
  stopNode,
  waitFor,
  type ArtifactManifest,
  type ArtifactServer,
  type Fault,
  type NodeDescriptor,
  type ReleaseSigner,
  type SimChild,
  type SimTimings,
} from '@guts-upgrade/simulator';
import type { Result } from '@guts-upgrade/protocol';
import { loadConfig, type AgentConfig } from '../src/config.js';
import { ProcessDriver } from '../src/service/process.js';

export const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));

export const FAST_TIMINGS = {
  startup_delay_ms: 100,
  migrate_ms: 100,
  block_interval_ms: 100,
  leader_term_ms: 500,
  fault_delay_ms: 200,
  sync_blocks_per_sec: 500,
};

interface Tap {
  teardown(fn: () => unknown): void;
}

export interface Rig {
  dir: string;
  manifest: ArtifactManifest;
  server: ArtifactServer;
  node: NodeDescriptor;
  /** The other validators of the network (opts.peers of them), running 1.0.0 beside the node. */
  others: NodeDescriptor[];
  binary: string;
  configPath: string;
  config: AgentConfig;
  driver: ProcessDriver;
  artifact(version: string, fault?: Fault): { url: string; sha256: string; version: string };
  /** The release repository the agent trusts (`artifact()` signs through it with default fields). */
  releases: ReleaseSigner;
  cli(args: string[], env?: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }>;
  spawnCli(args: string[], env?: NodeJS.ProcessEnv): ChildProcess;
  startNode(): Promise<void>;
  healthVersion(): Promise<string | null>;
  writeConfig(patch: Record<string, unknown>): void;
}

export function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_OPTIONS; // tap's loader hooks must not leak into real child processes
  for (const k of Object.keys(env)) if (k.startsWith('GUTS_UPGRADE_') || k.startsWith('TAP')) delete env[k];
  return { ...env, ...extra };
}

export function sha(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** Content hash of every file in a dir (relative path -> sha256). */
export function treeHash(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(r);
      else out[r] = sha(path.join(dir, r));
    }
  };
  walk('');
  return out;
}

/** The agent's checks in tests: short waits on a simulator that answers at once (hosts that need longer override a key). */
export const TEST_CHECKS = {
  readyTimeoutMs: 15_000,
  versionTimeoutMs: 10_000,
  consensusTimeoutMs: 15_000,
  peersTimeoutMs: 15_000,
  advanceTimeoutMs: 15_000,
  syncTimeoutMs: 15_000,
  advanceWindowMs: 600,
  stabilizeMs: 1500,
  httpTimeoutMs: 3000,
  commandTimeoutMs: 30_000,
};

export async function makeRig(
  t: Tap,
  opts: {
    version?: string;
    dataSizeMb?: number;
    agent?: Record<string, unknown>;
    timings?: Partial<SimTimings>;
    /** Other validators started beside the agent's node (v1..vN, not managed by the agent). */
    peers?: number;
    nodeTimings?: Record<string, Partial<SimTimings>>;
  } = {},
): Promise<Rig> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'guts-agent-test-'));
  const manifest = buildArtifacts({ outDir: path.join(dir, 'artifacts') });
  const server = await startArtifactServer({ dir: path.join(dir, 'artifacts') });
  // The agent trusts this repository's pinned root, as on a validator host; `artifact()` signs the build a test names.
  const releases = createReleaseSigner(path.join(dir, 'artifacts', 'release'));
  const [node, ...others] = await createCluster({
    n: 1 + (opts.peers ?? 0),
    dir: path.join(dir, 'cluster'),
    timings: { ...FAST_TIMINGS, ...(opts.timings ?? {}) },
    nodeTimings: opts.nodeTimings,
    dataSizeMb: opts.dataSizeMb ?? 1,
    dataVersion: opts.version ?? '1.0.0',
  });
  const peerNodes: SimChild[] = others.map((d) => spawnNode(CLI_JS, d.configPath));
  const binary = path.join(dir, 'bin', 'guts-node');
  installBinary(findArtifact(manifest, opts.version ?? '1.0.0').path, binary);
  const configPath = path.join(dir, 'agent.yaml');
  const base = {
    nodeId: 'v0',
    service: { driver: 'process', args: ['--config', '{config}'], stopTimeoutMs: 5000 },
    node: { binary, dataDir: node!.dataDir, config: node!.configPath, apiUrl: node!.apiUrl, metricsUrl: node!.metricsUrl },
    stateDir: path.join(dir, 'state'),
    backup: { retention: 2 },
    release: { repository: `${server.url}/release`, root: releases.root },
    fetch: { retries: 3, backoffMs: 50, timeoutMs: 5000 },
    checks: { ...TEST_CHECKS },
    diskMarginBytes: 0,
  };
  let doc: Record<string, unknown> = { ...base, ...(opts.agent ?? {}) };
  const write = () => fs.writeFileSync(configPath, YAML.stringify(doc));
  write();
  const config = loadConfig(configPath, {});
  const driver = new ProcessDriver(config);
  const children = new Set<ChildProcess>();
  t.teardown(async () => {
    await Promise.all(peerNodes.map((c) => stopNode(c)));
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await driver.stop().catch(() => undefined);
    // A pid file left by a killed agent run still names the node.
    const pid = driver.pid();
    if (pid) process.kill(pid, 'SIGKILL');
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const rig: Rig = {
    dir,
    manifest,
    server,
    node: node!,
    others,
    binary,
    configPath,
    config,
    driver,
    releases,
    artifact(version, fault = 'none') {
      const a = findArtifact(manifest, version, fault);
      releases.sign(a.path, version);
      return { url: `${server.url}/${a.file}`, sha256: a.sha256, version };
    },
    spawnCli(args, env = {}) {
      const c = spawn(process.execPath, [CLI, ...args, '--config', configPath], { env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
      children.add(c);
      return c;
    },
    cli(args, env = {}) {
      return collect(rig.spawnCli(args, env));
    },
    async startNode() {
      const old = process.env.NODE_OPTIONS;
      delete process.env.NODE_OPTIONS;
      try {
        await driver.start();
      } finally {
        if (old !== undefined) process.env.NODE_OPTIONS = old;
      }
      await waitFor(async () => (await fetch(`${node!.apiUrl}/health/ready`).catch(() => null))?.status === 200, { what: 'node ready', timeoutMs: 15_000 });
    },
    async healthVersion() {
      const r = await fetch(`${node!.apiUrl}/health`).catch(() => null);
      if (!r) return null;
      return ((await r.json()) as { version?: string }).version ?? null;
    },
    writeConfig(patch) {
      doc = { ...doc, ...patch };
      write();
    },
  };
  return rig;
}

/**
 * The `allowUnsigned` switch: a host without a release repository, which
 * installs what a command names by url and sha256. Only the tests of that
 * path (the switch itself, the bounded download, the digest signature) use it.
 */
export const UNSIGNED_HOST = { allowUnsigned: true, release: {} } as const;

export function upgradeArgs(a: { url: string; sha256: string; version: string }, extra: string[] = []): string[] {
  return ['upgrade', '--to', a.version, '--url', a.url, '--sha256', a.sha256, '--json', ...extra];
}

/** A result as the CLI prints it: the pipeline attaches evidence to every one. */
export type CliResult = Result & { evidence: NonNullable<Result['evidence']> };

export function parseResult(stdout: string): CliResult {
  const i = stdout.indexOf('{');
  return JSON.parse(stdout.slice(i)) as CliResult;
}

/** A child's exit code and whole output, once it closed. */
export function collect(c: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    c.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    c.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    c.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** An agent CLI run with --json: its exit code, the result it printed, and its stderr. */
export async function collectResult(c: ChildProcess): Promise<{ code: number | null; res: CliResult; stderr: string }> {
  const { code, stdout, stderr } = await collect(c);
  return { code, res: parseResult(stdout.includes('{') ? stdout : '{}'), stderr };
}

export type SpawnCli = (args: string[], env?: NodeJS.ProcessEnv) => ChildProcess;

/**
 * The agent CLI as children run with `--config configPath`; any still running
 * at teardown is killed (a paused or hung run must not outlive its test).
 */
export function cliRunner(t: Tap, configPath: string) {
  const children = new Set<ChildProcess>();
  t.teardown(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });
  const spawnCli: SpawnCli = (args, env = {}) => {
    const c = spawn(process.execPath, [CLI, ...args, '--config', configPath], { env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(c);
    return c;
  };
  return { children, spawnCli, cli: (args: string[], env: NodeJS.ProcessEnv = {}) => collectResult(spawnCli(args, env)) };
}

/**
 * A CLI run that pauses at `at` (a step, or a point inside one: pause-hook.ts),
 * returned once it wrote `marker` (a file that must not exist yet), hanging there.
 */
export async function pausedAt(spawnCli: SpawnCli, marker: string, at: string, args: string[], timeoutMs = 60_000): Promise<ChildProcess> {
  const child = spawnCli(args, { GUTS_UPGRADE_TEST_PAUSE_AT: at, GUTS_UPGRADE_TEST_PAUSE_FILE: marker });
  child.stdout?.resume();
  child.stderr?.resume();
  await waitFor(() => fs.existsSync(marker), { what: `agent paused at ${at}`, timeoutMs });
  return child;
}

/** kill -9, resolved once the process is gone. */
export async function kill9(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await gone;
}

/** kill -9 of a CLI run at `at`: what a crash there leaves for `recover`. */
export async function pauseAndKill(spawnCli: SpawnCli, marker: string, at: string, args: string[], timeoutMs?: number): Promise<void> {
  await kill9(await pausedAt(spawnCli, marker, at, args, timeoutMs));
}
