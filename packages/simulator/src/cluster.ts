/** Helpers for tests, demo and benchmarks: lay out a cluster, spawn and stop nodes, poll. */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { type SimTimings, pubkeyFor } from './config.js';
import { initDataDir } from './storage.js';

export interface NodeDescriptor {
  name: string;
  pubkey: string;
  /** Directory holding this node's config, data dir and history. */
  dir: string;
  configPath: string;
  dataDir: string;
  historyFile: string;
  apiAddr: string;
  apiUrl: string;
  metricsAddr: string;
  metricsUrl: string;
  p2pAddr: string;
}

export interface ClusterOptions {
  n: number;
  /** Parent directory; node i lives in `${dir}/v${i}`. */
  dir: string;
  host?: string;
  /** Consecutive ports from here (3 per node: api, p2p, metrics); free ports when omitted. */
  basePort?: number;
  timings?: Partial<SimTimings>;
  /** Per-node settings over `timings`, by validator name (e.g. one node's p2p warm-up). */
  nodeTimings?: Record<string, Partial<SimTimings>>;
  /** Pre-fill every data dir with this many MB of pack files. */
  dataSizeMb?: number;
  /** Schema version of pre-created data dirs (only with dataSizeMb; default 1.0.0). */
  dataVersion?: string;
  /** Shared genesis (default: now). */
  genesisTime?: number;
  logLevel?: string;
  /** Validator names (default v0..v{n-1}). */
  names?: string[];
  /** Genesis voting weight of each validator, in order (default 1 each). */
  weights?: number[];
  /**
   * Follower (non-validator) nodes to add after the validators, by name: full
   * nodes outside the set (role: follower), listed after the validators in the result.
   */
  followers?: string[];
}

/**
 * Ports below the kernel's ephemeral range (10000 up to its start), or null when that
 * range starts too low to leave room. A port the kernel hands out for listen(0) comes from
 * the ephemeral range, and so does the local port of every outgoing connection: between
 * freePorts() closing it and the node binding it, one of the many HTTP polls of a busy
 * machine could take it, and the node would die on EADDRINUSE.
 */
function quietRange(): [number, number] | null {
  try {
    const low = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 12_000 ? [10_000, low - 1] : null;
  } catch {
    return null;
  }
}

function listenOn(port: number, host: string): Promise<net.Server | null> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(null));
    s.listen(port, host, () => resolve(s));
  });
}

/** Distinct free TCP ports on host (bound together, then released), chosen at random below the ephemeral range (see quietRange). */
export async function freePorts(count: number, host = '127.0.0.1'): Promise<number[]> {
  const servers: net.Server[] = [];
  const range = quietRange();
  try {
    for (let tries = 0; servers.length < count; tries++) {
      const port = range && tries < count * 50 ? range[0] + Math.floor(Math.random() * (range[1] - range[0] + 1)) : 0;
      const s = await listenOn(port, host);
      if (s) servers.push(s);
      else if (port === 0) throw new Error(`cannot listen on ${host}`);
    }
    return servers.map((s) => (s.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

export async function createCluster(opts: ClusterOptions): Promise<NodeDescriptor[]> {
  const host = opts.host ?? '127.0.0.1';
  const n = opts.n;
  if (!Number.isInteger(n) || n < 1) throw new RangeError('n must be a positive integer');
  const followers = opts.followers ?? [];
  const total = n + followers.length;
  const ports = opts.basePort !== undefined ? Array.from({ length: 3 * total }, (_, i) => opts.basePort! + i) : await freePorts(3 * total, host);
  const validatorNames = opts.names ?? Array.from({ length: n }, (_, i) => `v${i}`);
  const weights = opts.weights ?? validatorNames.map(() => 1);
  if (weights.length !== validatorNames.length || !weights.every((w) => Number.isInteger(w) && w >= 0)) {
    throw new RangeError(`weights must be ${validatorNames.length} non-negative integers, got ${JSON.stringify(opts.weights)}`);
  }
  const names = [...validatorNames, ...followers];
  if (new Set(names).size !== names.length) throw new RangeError(`node names must be unique: ${names.join(', ')}`);
  const genesis = opts.genesisTime ?? Date.now();
  const descs: NodeDescriptor[] = names.map((name, i) => {
    const dir = path.resolve(opts.dir, name);
    const api = `${host}:${ports[3 * i]}`;
    const p2p = `${host}:${ports[3 * i + 1]}`;
    const met = `${host}:${ports[3 * i + 2]}`;
    return {
      name,
      pubkey: pubkeyFor(name),
      dir,
      configPath: path.join(dir, 'config.yaml'),
      dataDir: path.join(dir, 'data'),
      historyFile: path.join(dir, 'history.jsonl'),
      apiAddr: api,
      apiUrl: `http://${api}`,
      metricsAddr: met,
      metricsUrl: `http://${met}/metrics`,
      p2pAddr: p2p,
    };
  });
  for (const d of descs) {
    fs.mkdirSync(d.dir, { recursive: true });
    const cfg = {
      name: d.name,
      api_addr: d.apiAddr,
      p2p_addr: d.p2pAddr,
      metrics_addr: d.metricsAddr,
      data_dir: d.dataDir,
      history_file: d.historyFile,
      log_level: opts.logLevel ?? 'info',
      log_format: 'json',
      genesis_time: genesis,
      ...(followers.includes(d.name) ? { role: 'follower' } : {}),
      validators: descs.slice(0, validatorNames.length).map((v, i) => ({ name: v.name, pubkey: v.pubkey, weight: weights[i]!, addr: v.apiAddr })),
      sim: { ...(opts.timings ?? {}), ...(opts.nodeTimings?.[d.name] ?? {}) },
    };
    fs.writeFileSync(d.configPath, YAML.stringify(cfg));
    if (opts.dataSizeMb) initDataDir(d.dataDir, { version: opts.dataVersion ?? '1.0.0', sizeMb: opts.dataSizeMb, fileMb: Math.min(4, opts.dataSizeMb) });
  }
  return descs;
}

/** A spawned node: the child plus its captured output lines (last 5000). */
export interface SimChild extends ChildProcess {
  lines: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns a node (a launcher artifact, an installed binary, or a .js entry run with this node). */
/** Child env: tap's NODE_OPTIONS loader hooks are dropped unless the caller sets NODE_OPTIONS itself. */
function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  return { ...env, ...extra };
}

export function spawnNode(binaryPath: string, configPath: string | null, opts: { env?: NodeJS.ProcessEnv; args?: string[]; cwd?: string } = {}): SimChild {
  const args = [...(configPath ? ['--config', configPath] : []), ...(opts.args ?? [])];
  const [cmd, argv] = binaryPath.endsWith('.js') ? [process.execPath, [binaryPath, ...args]] : [binaryPath, args];
  const child = spawn(cmd, argv, { env: childEnv(opts.env), cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] }) as SimChild;
  child.lines = [];
  const collect = (stream: NodeJS.ReadableStream | null) => {
    let buf = '';
    stream?.setEncoding('utf8');
    stream?.on('data', (d: string) => {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        child.lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
        if (child.lines.length > 5000) child.lines.splice(0, 1000);
      }
    });
  };
  collect(child.stdout);
  collect(child.stderr);
  child.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return child;
}

/** SIGTERM (or the given signal), then SIGKILL after timeoutMs; resolves with the exit code. */
export async function stopNode(child: ChildProcess, opts: { signal?: NodeJS.Signals; timeoutMs?: number } = {}): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill(opts.signal ?? 'SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 5000);
  try {
    return await exited;
  } finally {
    clearTimeout(t);
  }
}

/** Parsed JSON log lines of a child (non-JSON lines skipped). */
export function jsonLines(child: SimChild): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const l of child.lines) {
    try {
      out.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      /* not JSON */
    }
  }
  return out;
}

/** Polls until fn returns a truthy value; throws after timeoutMs naming `what`. */
export async function waitFor<T>(fn: () => T | Promise<T>, opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {}): Promise<NonNullable<T>> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${opts.what ?? 'condition'}${lastErr ? `: ${String(lastErr)}` : ''}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 100));
  }
}

/** GET a URL and parse JSON; null when unreachable. */
export async function getJson<T = unknown>(url: string, timeoutMs = 1000): Promise<{ status: number; body: T } | null> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      /* plain text */
    }
    return { status: res.status, body: body as T };
  } catch {
    return null;
  }
}

/**
 * Moves one node to a new epoch (simulator control POST /sim/epoch): from
 * then on it reports and uses these weights. Set it on every running node;
 * a node that is down adopts it from its peers when it comes back.
 */
export async function setNodeEpoch(
  d: Pick<NodeDescriptor, 'apiUrl'>,
  epoch: number,
  weights: number[],
  active?: boolean[],
  timeoutMs = 3000,
): Promise<{ status: number; body: unknown } | null> {
  try {
    const res = await fetch(`${d.apiUrl}/sim/epoch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ epoch, weights, ...(active ? { active } : {}) }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      /* plain text */
    }
    return { status: res.status, body };
  } catch {
    return null;
  }
}

/** /api/consensus/validators as the node reports it. */
export interface ValidatorsReport {
  epoch: number;
  total_weight: number;
  quorum_weight: number;
  validator_count: number;
  validators: { name: string; pubkey: string; weight: number; addr: string; active: boolean }[];
}

/** A block as /api/consensus/blocks reports it. */
export interface BlockReport {
  height: number;
  block_id: string;
  parent_id: string;
  producer: string;
  timestamp: number;
  tx_count: number;
  tx_root: string;
  state_root: string;
  view: number;
  signature_count: number;
}

export async function consensusValidators(d: Pick<NodeDescriptor, 'apiUrl'>): Promise<ValidatorsReport | null> {
  const r = await getJson<ValidatorsReport>(`${d.apiUrl}/api/consensus/validators`);
  return r && r.status === 200 ? r.body : null;
}

/** The last 10 finalized blocks, oldest first. */
export async function consensusBlocks(d: Pick<NodeDescriptor, 'apiUrl'>): Promise<BlockReport[] | null> {
  const r = await getJson<BlockReport[]>(`${d.apiUrl}/api/consensus/blocks`);
  return r && r.status === 200 && Array.isArray(r.body) ? r.body : null;
}

export interface ConsensusStatus {
  enabled: boolean;
  state: string;
  view: number;
  finalized_height: number;
  current_leader: string | null;
  is_leader: boolean;
  pending_transactions: number;
}

export async function consensusStatus(d: Pick<NodeDescriptor, 'apiUrl'>): Promise<ConsensusStatus | null> {
  const r = await getJson<ConsensusStatus>(`${d.apiUrl}/api/consensus/status`);
  return r && r.status === 200 ? r.body : null;
}

/** Finalized height of each node (null when unreachable). */
export async function clusterHeights(descs: Pick<NodeDescriptor, 'apiUrl'>[]): Promise<(number | null)[]> {
  return Promise.all(descs.map(async (d) => (await consensusStatus(d))?.finalized_height ?? null));
}

/** Waits until /health/ready answers 200. */
export async function waitReady(d: Pick<NodeDescriptor, 'apiUrl'>, timeoutMs = 10_000): Promise<void> {
  await waitFor(async () => (await getJson(`${d.apiUrl}/health/ready`))?.status === 200, { timeoutMs, what: `${d.apiUrl} ready` });
}

/** Runs a one-shot command (e.g. `--version`, migrate, verify) to completion. */
export function runCommand(
  binaryPath: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const [cmd, argv] = binaryPath.endsWith('.js') ? [process.execPath, [binaryPath, ...args]] : [binaryPath, args];
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, argv, { env: childEnv(opts.env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    c.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const t = setTimeout(() => c.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    c.once('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    c.once('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Path of the plain `guts-node` entry (version 1.0.0 unless GUTS_SIM_BUILD_VERSION is set). */
export const CLI_JS = fileURLToPath(new URL('./cli.js', import.meta.url));
