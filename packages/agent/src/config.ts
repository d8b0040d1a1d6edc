/**
 * Agent configuration: one YAML or JSON file plus GUTS_UPGRADE_* environment
 * overrides. Everything the agent executes (paths, migration/verify/smoke argv)
 * comes from here, never from the network.
 *
 * Env overrides: GUTS_UPGRADE_<SECTION>__<KEY> with keys in SNAKE_CASE, e.g.
 * GUTS_UPGRADE_COORDINATOR__TOKEN, GUTS_UPGRADE_CHECKS__READY_TIMEOUT_MS, and
 * for top-level keys GUTS_UPGRADE_NODE_ID, GUTS_UPGRADE_STATE_DIR.
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { CodedError, cronProblem, durationProblem, parseDurationMs, tokenProblem } from '@guts-upgrade/protocol';
import { resolveBlueGreen, type BlueGreenConfig } from './blue-green/config.js';

export const DEFAULT_CONFIG_PATH = '/etc/guts-upgrade/agent.yaml';

export interface AgentConfig {
  nodeId: string;
  /**
   * The public key (hex) of the chain validator this node runs as, sent in
   * hello so the coordinator binds the node to its validator on the chain.
   */
  validatorPubkey: string | null;
  /**
   * validator (default) or follower: a full node outside the validator set.
   * Sent in hello; the coordinator refuses a role other than the node's
   * registration (E_ROLE_MISMATCH). A follower's validatorPubkey, if set, is
   * its node's own key, which the coordinator checks is in no validator set.
   */
  role: 'validator' | 'follower';
  coordinator: {
    url: string | null;
    token: string | null;
    tokenFile: string | null;
    reconnectMaxMs: number;
    /** A PEM file of the CA that signed the coordinator's certificate (a private CA), trusted besides the system's. */
    caFile: string | null;
    /** The file's PEM text, read at load. */
    ca: string | null;
    /** ws:// to a host other than loopback sends the token in clear: refused unless this is set. */
    allowInsecure: boolean;
  };
  service: {
    driver: 'systemd' | 'process' | 'docker' | 'compose';
    /** systemd unit name. */
    name: string;
    /** docker driver: the container's name. */
    container: string;
    /** compose driver: the operator's compose file (never edited) and the service in it. */
    file: string | null;
    service: string;
    /** compose driver: the project name, when the operator sets one (`docker-compose -p`). */
    project: string | null;
    /** docker and compose drivers: the engine's API socket. */
    dockerSocket: string;
    /** docker and compose drivers: where guts-node lives inside the image ({binary} in commands). */
    imageBinary: string;
    /** process driver: argv after the binary; placeholders {binary} {config} {dataDir}. */
    args: string[];
    env: Record<string, string>;
    pidFile: string;
    logFile: string;
    stopTimeoutMs: number;
  };
  node: {
    binary: string;
    dataDir: string;
    config: string;
    apiUrl: string;
    metricsUrl: string | null;
    /** The user guts-node runs as; candidates' migrations and checks run as it. Null: the unit's User=, else the data's owner. */
    user: string | null;
  };
  stateDir: string;
  stagingDir: string;
  backup: { dir: string; retention: number; schedule: string | null };
  fetch: {
    retries: number;
    backoffMs: number;
    timeoutMs: number;
    /** The download's size bound when the command gives no artifact length; a length above it is refused too. */
    maxBytes: number;
    /** Origins (scheme://host[:port]) a redirect may lead to besides the artifact URL's own; normalized by URL. */
    allowedOrigins: string[];
  };
  checks: {
    readyTimeoutMs: number;
    /** Until the running process reports the target version. */
    versionTimeoutMs: number;
    /** Until the consensus state leaves consensusStartingStates. */
    consensusTimeoutMs: number;
    consensusStartingStates: string[];
    /** Until the node reports at least minPeers peers (a figure it does not report is recorded as such). */
    peersTimeoutMs: number;
    /** Until the finalized height passes its value at the start of the stabilisation window. */
    advanceTimeoutMs: number;
    /** Longest pause between two polls of a waiting check (they start at 100 ms and back off). */
    pollMaxMs: number;
    syncTimeoutMs: number;
    syncDistance: number;
    advanceWindowMs: number;
    stabilizeMs: number;
    minPeers: number;
    httpTimeoutMs: number;
    commandTimeoutMs: number;
    maxErrorRateIncrease: number;
    maxLatencyFactor: number;
    minLatencyMs: number;
  };
  commands: { migrate: string[] | null; verify: string[] | null; smoke: string[] | null };
  /**
   * Upgrades without a trusted root (no release.repository): refused unless
   * this is true, and then logged as a warning at every start and command.
   * Off by default: an agent runs as root, and unsigned code must be a choice.
   */
  allowUnsigned: boolean;
  /**
   * PEM text (resolved from a path when the value is a file). An ed25519 key
   * over the sha256 of url+sha256 commands: it binds no version, path kind or
   * expiry, so it is no trusted root and counts only with allowUnsigned.
   */
  releasePublicKey: string | null;
  /**
   * Releases resolved through The Update Framework (release-repo.ts): a command
   * names a version and the agent installs only what this repository's signed
   * metadata says that version is. Off when repository is null.
   */
  release: {
    /** Base URL of the repository: metadata under <repository>/metadata/, files under <repository>/targets/. */
    repository: string | null;
    /** The pinned root.json, the trust anchor: only its keys (and roots they sign) are trusted. */
    root: string | null;
    /** The metadata the agent last trusted (rollback protection lives here); default <stateDir>/tuf. */
    cacheDir: string;
    /** Local policy only, never the coordinator's: may a command install an older version? */
    allowDowngrade: boolean;
    /**
     * Local policy for hosts without a repository (allowUnsigned): may a command
     * install a new major version? With a repository the signed path kind decides.
     */
    allowMajor: boolean;
  };
  logLevel: string;
  /** Disk space kept free beyond backup + artifact, bytes. */
  diskMarginBytes: number;
  /**
   * The agent's own metrics in node_exporter's textfile format (docs/observability.md):
   * a *.prom file rewritten after each command result and every intervalMs; off when null.
   */
  metrics: { textfile: string | null; intervalMs: number };
  /**
   * Followers on docker hosts only: upgrades start the new version beside the
   * old one and move traffic through a reverse proxy (blue-green/config.ts).
   * Null: upgrades run in place.
   */
  blueGreen: BlueGreenConfig | null;
}

type Kind = 'string' | 'nstring' | 'int' | 'number' | 'bool' | 'ms' | 'cron' | 'argv' | 'nargv' | 'list' | 'origins' | 'env' | 'enum';
interface Field {
  kind: Kind;
  dflt?: unknown;
  values?: string[];
  min?: number;
  required?: boolean;
}

const S = (dflt?: string, required = false): Field => ({ kind: 'string', dflt, required });
const NS = (dflt: string | null = null): Field => ({ kind: 'nstring', dflt });
const I = (dflt: number, min = 0): Field => ({ kind: 'int', dflt, min });
const N = (dflt: number, min = 0): Field => ({ kind: 'number', dflt, min });
/** A duration, in the syntax both daemons share: milliseconds, or "30s", "2m", "1h30m". */
const D = (dflt: number, min = 0): Field => ({ kind: 'ms', dflt, min });

const SCHEMA: Record<string, Field | Record<string, Field>> = {
  nodeId: S(undefined, true),
  validatorPubkey: NS(),
  role: { kind: 'enum', values: ['validator', 'follower'], dflt: 'validator' },
  coordinator: {
    url: NS(),
    token: NS(),
    tokenFile: NS(),
    reconnectMaxMs: D(30_000, 100),
    caFile: NS(),
    allowInsecure: { kind: 'bool', dflt: false },
  },
  service: {
    driver: { kind: 'enum', values: ['systemd', 'process', 'docker', 'compose'], dflt: 'systemd' },
    name: S('guts-node'),
    container: S('guts-node'),
    file: NS(),
    service: S('guts-node'),
    project: NS(),
    dockerSocket: S('/var/run/docker.sock'),
    imageBinary: S('/usr/local/bin/guts-node'),
    args: { kind: 'argv', dflt: ['--config', '{config}'] },
    env: { kind: 'env', dflt: {} },
    pidFile: NS(),
    logFile: NS(),
    stopTimeoutMs: D(30_000, 100),
  },
  node: {
    binary: S('/usr/local/bin/guts-node'),
    dataDir: S('/var/lib/guts/data'),
    config: S('/etc/guts/config.yaml'),
    apiUrl: S('http://127.0.0.1:8080'),
    metricsUrl: NS('http://127.0.0.1:9090/metrics'),
    user: NS(),
  },
  stateDir: S('/var/lib/guts-upgrade'),
  stagingDir: NS(),
  backup: { dir: NS(), retention: I(3, 1), schedule: { kind: 'cron', dflt: null } },
  fetch: {
    retries: I(5),
    backoffMs: D(500),
    timeoutMs: D(60_000, 100),
    // 1 GiB: far above any guts-node binary, far below what fills a staging disk.
    maxBytes: I(1024 ** 3, 1),
    allowedOrigins: { kind: 'origins', dflt: [] },
  },
  checks: {
    readyTimeoutMs: D(120_000, 100),
    versionTimeoutMs: D(60_000, 100),
    consensusTimeoutMs: D(120_000, 100),
    consensusStartingStates: { kind: 'list', dflt: ['Starting'] },
    peersTimeoutMs: D(120_000, 100),
    advanceTimeoutMs: D(120_000, 100),
    pollMaxMs: D(2_000, 50),
    syncTimeoutMs: D(300_000, 100),
    syncDistance: I(5),
    advanceWindowMs: D(10_000),
    stabilizeMs: D(5_000),
    minPeers: I(0),
    httpTimeoutMs: D(3_000, 50),
    commandTimeoutMs: D(600_000, 100),
    maxErrorRateIncrease: N(0.05),
    maxLatencyFactor: N(3),
    minLatencyMs: N(50),
  },
  commands: { migrate: { kind: 'nargv', dflt: null }, verify: { kind: 'nargv', dflt: null }, smoke: { kind: 'nargv', dflt: null } },
  allowUnsigned: { kind: 'bool', dflt: false },
  releasePublicKey: NS(),
  release: { repository: NS(), root: NS(), cacheDir: NS(), allowDowngrade: { kind: 'bool', dflt: false }, allowMajor: { kind: 'bool', dflt: false } },
  logLevel: { kind: 'enum', values: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], dflt: 'info' },
  diskMarginBytes: I(64 * 1024 * 1024),
  metrics: { textfile: NS(), intervalMs: D(15_000, 1_000) },
};

function isField(v: Field | Record<string, Field>): v is Field {
  return typeof (v as Field).kind === 'string';
}

function snake(key: string): string {
  return key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

function bad(key: string, reason: string): never {
  throw new CodedError('E_CONFIG', `config ${key}: ${reason}`, { key });
}

function coerce(key: string, f: Field, raw: unknown, fromEnv: boolean): unknown {
  if (raw === undefined) {
    if (f.required) bad(key, 'is required');
    return f.dflt;
  }
  if (raw === null || raw === '') {
    if (f.kind === 'nstring' || f.kind === 'nargv') return null;
    if (f.required || f.dflt === undefined) bad(key, 'is required');
    return f.dflt;
  }
  switch (f.kind) {
    case 'string':
    case 'nstring':
      if (typeof raw !== 'string') bad(key, `must be a string, got ${JSON.stringify(raw)}`);
      return raw;
    case 'enum':
      if (typeof raw !== 'string' || !f.values!.includes(raw)) bad(key, `must be one of ${f.values!.join(', ')}, got ${JSON.stringify(raw)}`);
      return raw;
    case 'bool':
      if (raw === true || raw === false) return raw;
      if (fromEnv && (raw === 'true' || raw === 'false')) return raw === 'true';
      return bad(key, `must be true or false, got ${JSON.stringify(raw)}`);
    case 'ms': {
      const n = parseDurationMs(raw);
      if (n === null) bad(key, durationProblem(raw)!);
      if (n < (f.min ?? 0)) bad(key, `must be at least ${f.min ?? 0} ms, got ${n}`);
      return n;
    }
    case 'cron': {
      const problem = cronProblem(raw);
      if (problem) bad(key, problem);
      return raw;
    }
    case 'int':
    case 'number': {
      const n = typeof raw === 'number' ? raw : fromEnv && typeof raw === 'string' ? Number(raw) : NaN;
      if (!Number.isFinite(n)) bad(key, `must be a number, got ${JSON.stringify(raw)}`);
      if (f.kind === 'int' && !Number.isInteger(n)) bad(key, `must be an integer, got ${n}`);
      if (n < (f.min ?? 0)) bad(key, `must be >= ${f.min ?? 0}, got ${n}`);
      return n;
    }
    case 'list': {
      let v = raw;
      if (fromEnv && typeof raw === 'string') {
        try {
          v = JSON.parse(raw);
        } catch {
          bad(key, 'must be a JSON array of strings in the environment');
        }
      }
      if (!Array.isArray(v) || !v.every((x) => typeof x === 'string' && x.length > 0 && x.length <= 64))
        bad(key, 'must be a list of names (1 to 64 characters each)');
      return v;
    }
    case 'origins': {
      let v = raw;
      if (fromEnv && typeof raw === 'string') {
        try {
          v = JSON.parse(raw);
        } catch {
          bad(key, 'must be a JSON array of origins in the environment');
        }
      }
      if (!Array.isArray(v)) bad(key, 'must be a list of origins such as "https://mirror.example:8443"');
      return (v as unknown[]).map((o) => originOf(key, o));
    }
    case 'argv':
    case 'nargv': {
      let v = raw;
      if (fromEnv && typeof raw === 'string') {
        try {
          v = JSON.parse(raw);
        } catch {
          bad(key, 'must be a JSON array of strings in the environment');
        }
      }
      if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) bad(key, 'must be an array of strings (an argv, never a shell string)');
      if (f.kind === 'nargv' && (v as string[]).length === 0) bad(key, 'must not be empty (omit it instead)');
      return v;
    }
    case 'env': {
      let v = raw;
      if (fromEnv && typeof raw === 'string') {
        try {
          v = JSON.parse(raw);
        } catch {
          bad(key, 'must be a JSON object in the environment');
        }
      }
      if (!v || typeof v !== 'object' || Array.isArray(v) || !Object.values(v).every((x) => typeof x === 'string')) {
        bad(key, 'must be a mapping of strings');
      }
      return v;
    }
  }
}

/**
 * An origin exactly as URL normalizes it (lower-case host, default port dropped),
 * so the fetch step compares strings; a path, query or credentials would suggest
 * a narrower rule than the origin check applies, so they are refused.
 */
function originOf(key: string, raw: unknown): string {
  let u: URL | null = null;
  try {
    u = typeof raw === 'string' ? new URL(raw) : null;
  } catch {
    /* reported below */
  }
  if (
    !u ||
    (u.protocol !== 'http:' && u.protocol !== 'https:') ||
    u.username ||
    u.password ||
    u.search ||
    u.hash ||
    (u.pathname !== '/' && u.pathname !== '')
  ) {
    bad(key, `must list origins as scheme://host[:port] (http or https, no path), got ${JSON.stringify(raw)}`);
  }
  return u.origin;
}

export function parseConfigText(text: string, file: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = file.endsWith('.json') ? JSON.parse(text) : YAML.parse(text);
  } catch (err) {
    throw new CodedError('E_CONFIG', `config file ${file} does not parse: ${(err as Error).message}`);
  }
  if (doc == null) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new CodedError('E_CONFIG', `config file ${file} must be a mapping`);
  return doc as Record<string, unknown>;
}

/** Validates a raw document (+ env overrides) into a full config, or throws E_CONFIG naming the key. */
export function resolveConfig(doc: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env, baseDir = process.cwd()): AgentConfig {
  const out: Record<string, unknown> = {};
  // blueGreen is nested (proxy, slots): it has its own checks (blue-green/config.ts).
  for (const key of Object.keys(doc)) if (!(key in SCHEMA) && key !== 'blueGreen') bad(key, 'is not a known key');
  for (const [key, spec] of Object.entries(SCHEMA)) {
    if (isField(spec)) {
      const ev = env[`GUTS_UPGRADE_${snake(key)}`];
      out[key] = ev !== undefined ? coerce(key, spec, ev, true) : coerce(key, spec, doc[key], false);
      continue;
    }
    const section = doc[key] ?? {};
    if (typeof section !== 'object' || Array.isArray(section) || section === null) bad(key, 'must be a mapping');
    const sec = section as Record<string, unknown>;
    for (const k of Object.keys(sec)) if (!(k in spec)) bad(`${key}.${k}`, 'is not a known key');
    const o: Record<string, unknown> = {};
    for (const [k, f] of Object.entries(spec)) {
      const ev = env[`GUTS_UPGRADE_${snake(key)}__${snake(k)}`];
      o[k] = ev !== undefined ? coerce(`${key}.${k}`, f, ev, true) : coerce(`${key}.${k}`, f, sec[k], false);
    }
    out[key] = o;
  }
  const c = out as unknown as AgentConfig;
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(c.nodeId)) bad('nodeId', 'must match [A-Za-z0-9][A-Za-z0-9._-]{0,62}');
  if (c.validatorPubkey !== null && !/^[0-9a-fA-F]{2,256}$/.test(c.validatorPubkey)) {
    bad('validatorPubkey', `must be the validator's public key in hex (2 to 256 hex digits), got ${JSON.stringify(c.validatorPubkey)}`);
  }
  const abs = (p: string) => path.resolve(baseDir, p);
  c.stateDir = abs(c.stateDir);
  c.node.binary = abs(c.node.binary);
  c.node.dataDir = abs(c.node.dataDir);
  c.node.config = abs(c.node.config);
  c.stagingDir = abs(c.stagingDir ?? path.join(c.stateDir, 'staging'));
  c.backup.dir = abs(c.backup.dir ?? path.join(c.stateDir, 'backups'));
  c.service.pidFile = abs(c.service.pidFile ?? path.join(c.stateDir, 'guts-node.pid'));
  c.service.logFile = abs(c.service.logFile ?? path.join(c.stateDir, 'guts-node.log'));
  for (const [k, u] of [
    ['node.apiUrl', c.node.apiUrl],
    ['node.metricsUrl', c.node.metricsUrl],
  ] as const) {
    if (u !== null && !/^https?:\/\/\S+$/.test(u)) bad(k, `must be an http(s) URL, got ${JSON.stringify(u)}`);
  }
  c.node.apiUrl = c.node.apiUrl.replace(/\/+$/, '');
  if (c.coordinator.url !== null) {
    if (!/^wss?:\/\/\S+$/.test(c.coordinator.url)) bad('coordinator.url', `must be a ws:// or wss:// URL, got ${JSON.stringify(c.coordinator.url)}`);
    c.coordinator.url = c.coordinator.url.replace(/\/+$/, '');
    if (cleartextToRemote(c.coordinator.url) && !c.coordinator.allowInsecure) {
      bad(
        'coordinator.url',
        `${c.coordinator.url} would send the agent's token in clear over the network: use wss:// (with coordinator.caFile for a private CA), or set coordinator.allowInsecure: true on a network you trust`,
      );
    }
  }
  c.coordinator.ca = null;
  if (c.coordinator.caFile !== null) {
    c.coordinator.caFile = abs(c.coordinator.caFile);
    try {
      c.coordinator.ca = fs.readFileSync(c.coordinator.caFile, 'utf8');
    } catch (err) {
      bad('coordinator.caFile', `cannot be read: ${(err as Error).message}`);
    }
    if (!c.coordinator.ca.includes('BEGIN CERTIFICATE')) bad('coordinator.caFile', `${c.coordinator.caFile} holds no PEM certificate`);
  }
  if (c.coordinator.token === null && c.coordinator.tokenFile !== null) c.coordinator.token = readTokenFile(abs(c.coordinator.tokenFile));
  if (c.coordinator.token !== null) {
    const problem = tokenProblem(c.coordinator.token);
    if (problem) bad(c.coordinator.tokenFile !== null ? 'coordinator.tokenFile' : 'coordinator.token', problem);
  }
  if (c.releasePublicKey !== null && !c.releasePublicKey.includes('BEGIN PUBLIC KEY')) {
    try {
      c.releasePublicKey = fs.readFileSync(abs(c.releasePublicKey), 'utf8');
    } catch (err) {
      bad('releasePublicKey', `is neither a PEM key nor a readable file: ${(err as Error).message}`);
    }
    if (!c.releasePublicKey.includes('BEGIN PUBLIC KEY')) bad('releasePublicKey', 'file does not hold a PEM public key');
  }
  c.release.cacheDir = abs(c.release.cacheDir ?? path.join(c.stateDir, 'tuf'));
  if (c.release.repository !== null) {
    if (!/^https?:\/\/\S+$/.test(c.release.repository)) bad('release.repository', `must be an http(s) URL, got ${JSON.stringify(c.release.repository)}`);
    c.release.repository = c.release.repository.replace(/\/+$/, '');
    if (c.release.root === null) bad('release.root', "is required with release.repository: the path of the repository's root.json, pinned on this host");
  }
  if (c.release.root !== null) {
    c.release.root = abs(c.release.root);
    let type: unknown;
    try {
      type = (JSON.parse(fs.readFileSync(c.release.root, 'utf8')) as { signed?: { _type?: unknown } }).signed?._type;
    } catch (err) {
      bad('release.root', `cannot be read as JSON: ${(err as Error).message}`);
    }
    if (type !== 'root') bad('release.root', `${c.release.root} is not TUF root metadata (signed._type is ${JSON.stringify(type)})`);
  }
  if (c.backup.schedule !== null && c.backup.schedule.trim().split(/\s+/).length < 5) {
    bad('backup.schedule', `must be a cron expression (5 or 6 fields), got ${JSON.stringify(c.backup.schedule)}`);
  }
  if (c.service.driver === 'systemd' && !/^[A-Za-z0-9@._-]+$/.test(c.service.name)) bad('service.name', 'is not a valid unit name');
  checkContainerService(c, abs);
  c.blueGreen = resolveBlueGreen(doc.blueGreen, { role: c.role, driver: c.service.driver, abs });
  if (c.metrics.textfile !== null) {
    // node_exporter's textfile collector reads *.prom only: any other name would be silently ignored.
    if (!c.metrics.textfile.endsWith('.prom')) bad('metrics.textfile', `must name a *.prom file, got ${JSON.stringify(c.metrics.textfile)}`);
    c.metrics.textfile = abs(c.metrics.textfile);
  }
  return c;
}

/** Names Docker and Compose accept: anything else would reach the engine as a different (or no) object. */
const CONTAINER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** The docker and compose drivers' keys: what each needs, checked here so a bad one never reaches an upgrade. */
function checkContainerService(c: AgentConfig, abs: (p: string) => string): void {
  const d = c.service.driver;
  if (d !== 'docker' && d !== 'compose') {
    if (c.service.file !== null) bad('service.file', `is for driver compose only (driver is ${d})`);
    return;
  }
  c.service.dockerSocket = abs(c.service.dockerSocket);
  if (!path.isAbsolute(c.service.imageBinary))
    bad('service.imageBinary', `must be an absolute path inside the image, got ${JSON.stringify(c.service.imageBinary)}`);
  if (d === 'docker' && !CONTAINER_NAME.test(c.service.container)) {
    bad('service.container', `must be a container name ([A-Za-z0-9][A-Za-z0-9_.-]*), got ${JSON.stringify(c.service.container)}`);
  }
  if (d === 'compose') {
    if (c.service.file === null) bad('service.file', "is required with driver compose: the operator's compose file, e.g. /srv/guts/docker-compose.yml");
    c.service.file = abs(c.service.file);
    if (!CONTAINER_NAME.test(c.service.service)) bad('service.service', `must be a compose service name, got ${JSON.stringify(c.service.service)}`);
    if (c.service.project !== null && !/^[a-z0-9][a-z0-9_-]*$/.test(c.service.project)) {
      bad('service.project', `must be a compose project name (lower case, digits, - and _), got ${JSON.stringify(c.service.project)}`);
    }
  }
}

/** ws:// to anything but this host: the token and every command would cross the network in clear. */
export function cleartextToRemote(url: string): boolean {
  if (!url.startsWith('ws://')) return false;
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  return !(host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host));
}

/** The agent's token file: like an SSH key, refused when anyone but its owner may read it. */
function readTokenFile(file: string): string {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (err) {
    return bad('coordinator.tokenFile', `cannot be read: ${(err as Error).message}`);
  }
  if ((st.mode & 0o077) !== 0) {
    bad('coordinator.tokenFile', `${file} is mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}, open to others than its owner: chmod 0600 ${file}`);
  }
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch (err) {
    return bad('coordinator.tokenFile', `cannot be read: ${(err as Error).message}`);
  }
}

export function loadConfig(file: string = DEFAULT_CONFIG_PATH, env: NodeJS.ProcessEnv = process.env): AgentConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new CodedError('E_CONFIG', `cannot read config file ${file}: ${(err as Error).message}`);
  }
  return resolveConfig(parseConfigText(text, file), env, path.dirname(path.resolve(file)));
}

/** Fills {placeholders} in an argv from local values; unknown placeholders are a config error. */
export function fillArgv(argv: string[], values: Record<string, string>): string[] {
  return argv.map((a) =>
    a.replace(/\{(\w+)\}/g, (_m, name: string) => {
      const v = values[name];
      if (v === undefined) throw new CodedError('E_CONFIG', `unknown placeholder {${name}} in command ${JSON.stringify(argv)}`);
      return v;
    }),
  );
}
