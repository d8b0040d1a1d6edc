/**
 * Node configuration: CLI flags > GUTS_* env > YAML config file > defaults,
 * the same precedence as the real guts-node.
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { isLogLevel, type LogLevel } from './log.js';

export interface SimTimings {
  /** Delay before start-up completes (before migration, sync, readiness). */
  startup_delay_ms: number;
  /** Time an automatic minor migration or `guts-node migrate` takes. */
  migrate_ms: number;
  /** Blocks per second a node pulls from peers while catching up. */
  sync_blocks_per_sec: number;
  /** Probability (0..1) that a start is slow, and the extra delay it adds. */
  slow_start_chance: number;
  slow_start_ms: number;
  /** The leader proposes one block per interval. */
  block_interval_ms: number;
  /** The view (term) advances every leader_term_ms; the leader rotates with it. */
  leader_term_ms: number;
  /** Timeout of node-to-node HTTP calls. */
  p2p_timeout_ms: number;
  /** When a faulty build misbehaves after start (exits / corrupts). */
  fault_delay_ms: number;
  /**
   * The degrading build turns slow this long after it is ready (later than an
   * agent's verification, so only a canary soak can catch it), adding
   * degrade_latency_ms to every /api request from then on.
   */
  degrade_after_ms: number;
  degrade_latency_ms: number;
  /** After start-up (and any migration), storage takes this long to open; readiness follows it. */
  storage_open_ms: number;
  /** After readiness, the consensus engine stays in its `Starting` state this long, taking no part. */
  consensus_start_ms: number;
  /**
   * Connections to the other validators form one by one over this long after
   * the engine starts (evenly spread); until its connection forms, a peer is
   * neither polled, synced from nor voted with.
   */
  p2p_warmup_ms: number;
  /** What /health says about p2p: see P2pReport. */
  p2p_report: P2pReport;
}

/**
 * The p2p component of /health:
 * - `unknown`: today's real node, which never reports: `unknown` with reason
 *   "P2P not connected or not enabled" all its life, guts_p2p_peers_connected never set;
 * - `reported`: a future node: `unknown` until a first connection forms, then
 *   `up` with details.peer_count, rising over p2p_warmup_ms;
 * - `isolated`: a build that connects to nobody: `up` with 0 peers throughout.
 */
export type P2pReport = 'unknown' | 'reported' | 'isolated';
export const P2P_REPORTS: readonly P2pReport[] = ['unknown', 'reported', 'isolated'];

export const DEFAULT_TIMINGS: SimTimings = {
  startup_delay_ms: 200,
  migrate_ms: 300,
  sync_blocks_per_sec: 200,
  slow_start_chance: 0,
  slow_start_ms: 2000,
  block_interval_ms: 200,
  leader_term_ms: 1000,
  p2p_timeout_ms: 1000,
  fault_delay_ms: 500,
  degrade_after_ms: 15_000,
  degrade_latency_ms: 300,
  storage_open_ms: 0,
  consensus_start_ms: 0,
  p2p_warmup_ms: 0,
  p2p_report: 'unknown',
};

export interface ValidatorSpec {
  name: string;
  pubkey: string;
  /** Voting weight in the genesis epoch (an epoch change may alter it: see Consensus.setEpoch). */
  weight: number;
  /** API address (host:port) that peers use for /p2p traffic. */
  addr: string;
  /** Whether it votes and leads in the genesis epoch (default true). */
  active: boolean;
}

export interface NodeConfig {
  name: string;
  apiAddr: string;
  p2pAddr: string;
  metricsAddr: string;
  dataDir: string;
  logLevel: LogLevel;
  logFormat: 'json' | 'pretty';
  historyFile: string;
  /** Unix ms; the view is floor((now - genesis_time) / leader_term_ms). */
  genesisTime: number;
  validators: ValidatorSpec[];
  /**
   * validator (default) or follower: a follower is a full node outside the
   * validator set (it serves the API, e.g. behind a proxy). It never proposes
   * or votes, counts in no quorum, and keeps up by pulling finalized blocks
   * from the validators. The real node has no such switch: a node whose key
   * is not in the set simply follows; here the role says which one to be.
   */
  role: NodeRole;
  sim: SimTimings;
  configPath: string | null;
}

export type NodeRole = 'validator' | 'follower';
export const NODE_ROLES: readonly NodeRole[] = ['validator', 'follower'];

export class ConfigError extends Error {}

/** Parsed argv: flags (long names without dashes) and positionals. */
export interface ParsedArgs {
  flags: Record<string, string | true>;
  positionals: string[];
}

const SHORT: Record<string, string> = { c: 'config', V: 'version', h: 'help' };
const BOOLEAN = new Set(['version', 'help', 'full', 'local']);

export function parseArgs(argv: string[]): ParsedArgs {
  const flags: Record<string, string | true> = {};
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    let name: string | undefined;
    let value: string | undefined;
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      if (eq >= 0) {
        name = a.slice(2, eq);
        value = a.slice(eq + 1);
      } else name = a.slice(2);
    } else if (a.startsWith('-') && a.length > 1) {
      name = SHORT[a.slice(1)] ?? a.slice(1);
    } else {
      positionals.push(a);
      continue;
    }
    if (value === undefined && !BOOLEAN.has(name)) {
      const next = argv[i + 1];
      if (next === undefined) throw new ConfigError(`flag --${name} needs a value`);
      value = next;
      i++;
    }
    flags[name] = value ?? true;
  }
  return { flags, positionals };
}

function str(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return String(v);
  throw new ConfigError(`expected a string, got ${JSON.stringify(v)}`);
}

function get(obj: Record<string, unknown>, ...keys: string[]): unknown {
  // Accepts both flat keys (api_addr) and the real node's nested form (api.listen_addr).
  for (const k of keys) {
    let cur: unknown = obj;
    for (const part of k.split('.')) {
      if (cur && typeof cur === 'object' && part in (cur as Record<string, unknown>)) {
        cur = (cur as Record<string, unknown>)[part];
      } else {
        cur = undefined;
        break;
      }
    }
    if (cur !== undefined && cur !== null) return cur;
  }
  return undefined;
}

function num(v: unknown, what: string): number {
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isFinite(n) || n < 0) throw new ConfigError(`${what} must be a non-negative number, got ${JSON.stringify(v)}`);
  return n;
}

export function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config file ${file}: ${(e as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (e) {
    throw new ConfigError(`config file ${file} is not valid YAML: ${(e as Error).message}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError(`config file ${file} must be a mapping`);
  return doc as Record<string, unknown>;
}

/** The history file sits next to the data dir so restoring the data dir never rewinds it. */
export function defaultHistoryFile(dataDir: string): string {
  const abs = path.resolve(dataDir);
  return path.join(path.dirname(abs), `${path.basename(abs)}.history.jsonl`);
}

export function resolveConfig(args: ParsedArgs, env: NodeJS.ProcessEnv = process.env): NodeConfig {
  const f = args.flags;
  const explicit = typeof f.config === 'string' ? f.config : undefined;
  let file: Record<string, unknown> = {};
  let configPath: string | null = null;
  if (explicit !== undefined) {
    file = readConfigFile(explicit);
    configPath = path.resolve(explicit);
  } else if (fs.existsSync('config.yaml')) {
    // The real default is ./config.yaml, used only when present.
    file = readConfigFile('config.yaml');
    configPath = path.resolve('config.yaml');
  }
  const pick = (flag: string, envName: string, keys: string[], dflt: string): string => {
    const fv = f[flag];
    if (typeof fv === 'string') return fv;
    const ev = env[envName];
    if (ev !== undefined && ev !== '') return ev;
    return str(get(file, ...keys)) ?? dflt;
  };
  const apiAddr = pick('api-addr', 'GUTS_API_ADDR', ['api_addr', 'api.listen_addr'], '127.0.0.1:8080');
  const p2pAddr = pick('p2p-addr', 'GUTS_P2P_ADDR', ['p2p_addr', 'p2p.listen_addr'], '0.0.0.0:9000');
  const metricsAddr = pick('metrics-addr', 'GUTS_METRICS_ADDR', ['metrics_addr', 'metrics.listen_addr'], '0.0.0.0:9090');
  const dataDir = path.resolve(pick('data-dir', 'GUTS_DATA_DIR', ['data_dir', 'storage.data_dir'], './data'));
  const logLevel = pick('log-level', 'GUTS_LOG_LEVEL', ['log_level', 'log.level'], 'info').toLowerCase();
  if (!isLogLevel(logLevel)) throw new ConfigError(`invalid log level ${JSON.stringify(logLevel)}`);
  const logFormat = pick('log-format', 'GUTS_LOG_FORMAT', ['log_format', 'log.format'], 'json').toLowerCase();
  if (logFormat !== 'json' && logFormat !== 'pretty') throw new ConfigError(`invalid log format ${JSON.stringify(logFormat)} (json|pretty)`);
  for (const [what, a] of [
    ['api', apiAddr],
    ['p2p', p2pAddr],
    ['metrics', metricsAddr],
  ] as const)
    parseAddr(a, what);

  const historyRaw = env.GUTS_SIM_HISTORY_FILE || str(get(file, 'history_file', 'sim.history_file'));
  const historyFile = historyRaw ? path.resolve(historyRaw) : defaultHistoryFile(dataDir);

  const sim: SimTimings = { ...DEFAULT_TIMINGS };
  const simFile = (get(file, 'sim') ?? {}) as Record<string, unknown>;
  for (const key of Object.keys(DEFAULT_TIMINGS) as (keyof SimTimings)[]) {
    const ev = env[`GUTS_SIM_${key.toUpperCase()}`];
    const v = ev !== undefined && ev !== '' ? ev : simFile[key];
    if (v === undefined || v === null) continue;
    if (key === 'p2p_report') {
      if (!P2P_REPORTS.includes(v as P2pReport)) throw new ConfigError(`sim.p2p_report must be one of ${P2P_REPORTS.join(', ')}, got ${JSON.stringify(v)}`);
      sim.p2p_report = v as P2pReport;
    } else (sim as unknown as Record<string, number>)[key] = num(v, `sim.${key}`);
  }
  if (sim.slow_start_chance > 1) throw new ConfigError('sim.slow_start_chance must be within 0..1');
  if (sim.block_interval_ms < 10 || sim.leader_term_ms < 10) throw new ConfigError('sim.block_interval_ms and sim.leader_term_ms must be >= 10');

  const name = env.GUTS_SIM_NAME || str(get(file, 'name', 'node.name')) || 'node';
  const gRaw = get(file, 'genesis_time', 'consensus.genesis_time');
  let genesisTime = 0;
  if (gRaw !== undefined) {
    genesisTime = typeof gRaw === 'number' ? gRaw : Date.parse(String(gRaw));
    if (!Number.isFinite(genesisTime)) throw new ConfigError(`invalid genesis_time ${JSON.stringify(gRaw)}`);
  }
  const role = (env.GUTS_SIM_ROLE || str(get(file, 'role', 'node.role')) || 'validator').toLowerCase() as NodeRole;
  if (!NODE_ROLES.includes(role)) throw new ConfigError(`invalid role ${JSON.stringify(role)} (${NODE_ROLES.join('|')})`);
  const validators = parseValidators(get(file, 'validators', 'consensus.validators'), name, apiAddr, role);
  return { name, apiAddr, p2pAddr, metricsAddr, dataDir, logLevel, logFormat, historyFile, genesisTime, validators, role, sim, configPath };
}

function parseValidators(raw: unknown, selfName: string, apiAddr: string, role: NodeRole): ValidatorSpec[] {
  if (raw === undefined) {
    if (role === 'follower') throw new ConfigError('a follower needs the validators list: they are the peers it follows');
    // A lone node is a one-validator network: it finalizes alone.
    return [{ name: selfName, pubkey: pubkeyFor(selfName), weight: 1, addr: apiAddr, active: true }];
  }
  if (!Array.isArray(raw) || raw.length === 0) throw new ConfigError('validators must be a non-empty list');
  const out: ValidatorSpec[] = raw.map((v, i) => {
    if (!v || typeof v !== 'object') throw new ConfigError(`validators[${i}] must be a mapping`);
    const o = v as Record<string, unknown>;
    const name = str(o.name);
    const addr = str(o.addr ?? o.api_addr);
    if (!name || !addr) throw new ConfigError(`validators[${i}] needs name and addr`);
    parseAddr(addr, `validators[${i}].addr`);
    const weight = o.weight === undefined ? 1 : num(o.weight, `validators[${i}].weight`);
    if (!Number.isInteger(weight)) throw new ConfigError(`validators[${i}].weight must be an integer, got ${weight}`);
    if (o.active !== undefined && typeof o.active !== 'boolean') throw new ConfigError(`validators[${i}].active must be true or false`);
    return { name, addr, pubkey: str(o.pubkey) ?? pubkeyFor(name), weight, active: o.active !== false };
  });
  const names = new Set(out.map((v) => v.name));
  if (names.size !== out.length) throw new ConfigError('validator names must be unique');
  if (role === 'validator' && !names.has(selfName)) throw new ConfigError(`this node's name ${JSON.stringify(selfName)} is not in validators`);
  if (role === 'follower' && names.has(selfName))
    throw new ConfigError(
      `follower ${JSON.stringify(selfName)} is in validators: a follower is outside the validator set (remove it there, or run it as a validator)`,
    );
  return out;
}

/** A deterministic stand-in for an ed25519 public key (64 hex chars). */
export function pubkeyFor(name: string): string {
  // Not crypto: a stable, unique-looking hex id derived from the name.
  let h = 0x811c9dc5;
  let out = '';
  for (let round = 0; out.length < 64; round++) {
    for (const ch of `${round}:${name}`) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
    out += h.toString(16).padStart(8, '0');
  }
  return out.slice(0, 64);
}

export function parseAddr(addr: string, what = 'address'): { host: string; port: number } {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(addr);
  if (!m) throw new ConfigError(`invalid ${what} address ${JSON.stringify(addr)} (want host:port)`);
  const port = Number(m[2]);
  if (port > 65535) throw new ConfigError(`invalid ${what} port in ${addr}`);
  return { host: m[1]!, port };
}
