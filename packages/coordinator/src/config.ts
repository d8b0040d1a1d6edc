/**
 * Configuration: YAML file, then environment, then flags (flags win). Every
 * value is checked and an invalid one is refused naming its key, so a typo
 * never silently falls back to a default.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve as resolvePath } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { CodedError, cronProblem, durationProblem, parseDurationMs, tokenProblem } from '@guts-upgrade/protocol';
import { DEFAULT_CANARY_LIMITS, type CanaryLimits } from './canary.js';
import { hashToken } from './db.js';
import type { RolloutOptions } from './model.js';
import type { WindowSpec } from './windows.js';

export type Role = 'viewer' | 'operator';

export interface OperatorToken {
  name: string;
  tokenHash: string;
  role: Role;
}

export interface WebhookConfig {
  url: string;
  secret: string;
  events: string[] | null;
}

export interface Config {
  listen: { host: string; port: number | null; socket: string | null };
  tls: { cert: string; key: string } | null;
  db: string;
  operators: OperatorToken[];
  heartbeat: { intervalMs: number; timeoutMs: number };
  /** Validator-set size n; defaults to the number of registered nodes. */
  validators: number | null;
  webhooks: WebhookConfig[];
  webhookRetry: { maxAttempts: number; baseDelayMs: number; timeoutMs: number };
  windows: WindowSpec[];
  /** The rollout options a request may leave out. */
  defaults: Pick<RolloutOptions, 'maxUnavailable' | 'stabilizationMs' | 'soakMs' | 'syncDistance' | 'syncTimeoutMs' | 'haltTimeoutMs'> & {
    canaryLimits: CanaryLimits;
  };
  tickMs: number;
  logLevel: string;
  /**
   * How the chain's own evidence gates dispatch: weight kept in reserve beyond
   * the quorum, and whether an upgraded node must produce a block in a leader
   * view of its own before the next wave (docs/chain-safety.md).
   */
  chain: { slackMargin: number; requireProducedBlock: boolean };
  /** What one agent, one token or one stranger may cost the coordinator (docs/operating.md, "Limits"). */
  limits: Limits;
}

export interface Limits {
  /** Per agent, a token bucket: refilled at perSecond, holding at most burst; an agent past it is cut off. */
  agentMessages: { perSecond: number; burst: number };
  /** Per operator token (per client address without a known token): at most max requests in each windowMs. */
  api: { max: number; windowMs: number };
  /** Refused agent handshakes are counted; the log gets at most one line about them per this interval. */
  refusedLogIntervalMs: number;
}

export const DEFAULT_CONFIG: Config = {
  listen: { host: '127.0.0.1', port: 7600, socket: null },
  tls: null,
  db: 'guts-upgrade.db',
  operators: [],
  heartbeat: { intervalMs: 5000, timeoutMs: 15000 },
  validators: null,
  webhooks: [],
  webhookRetry: { maxAttempts: 8, baseDelayMs: 1000, timeoutMs: 5000 },
  windows: [],
  defaults: {
    maxUnavailable: 1,
    stabilizationMs: 30_000,
    soakMs: 300_000,
    syncDistance: 5,
    syncTimeoutMs: 600_000,
    haltTimeoutMs: 900_000,
    canaryLimits: { ...DEFAULT_CANARY_LIMITS },
  },
  tickMs: 500,
  logLevel: 'info',
  chain: { slackMargin: 0, requireProducedBlock: true },
  // An agent sends a heartbeat every few seconds and a handful of progress messages per step: 50/s
  // with a burst of 200 is far above any agent's own traffic and far below what hurts. An operator's
  // page polls 4 requests a second and the CLI's watch fewer; 6000 a minute (100/s) leaves room for
  // scripts and tests that poll every 25 ms, and still stops a runaway loop.
  limits: { agentMessages: { perSecond: 50, burst: 200 }, api: { max: 6000, windowMs: 60_000 }, refusedLogIntervalMs: 60_000 },
};

function fail(key: string, reason: string): never {
  throw new CodedError('E_CONFIG', `config ${key}: ${reason}`, { key });
}

type Obj = Record<string, unknown>;
function obj(v: unknown, key: string): Obj {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) fail(key, 'must be a mapping');
  return v as Obj;
}
function only(o: Obj, key: string, allowed: string[]): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) fail(key ? `${key}.${k}` : k, `unknown key (expected one of ${allowed.join(', ')})`);
}
function int(v: unknown, key: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) fail(key, `must be an integer in [${min}, ${max}], got ${JSON.stringify(v)}`);
  return n;
}
/** A duration in the syntax both daemons share (protocol's schedule.ts): milliseconds, or "30s", "4h", "1h30m". */
function ms(v: unknown, key: string): number {
  const d = parseDurationMs(v);
  if (d === null) fail(key, durationProblem(v)!);
  return d;
}
function string(v: unknown, key: string): string {
  if (typeof v !== 'string' || v.length === 0) fail(key, 'must be a non-empty string');
  return v;
}

function num(v: unknown, key: string, min: number, max: number): number {
  const n = typeof v === 'string' && /^\d+(\.\d+)?$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n) || n < min || n > max) fail(key, `must be a number in [${min}, ${max}], got ${JSON.stringify(v)}`);
  return n;
}

/** Canary metrics limits, each key optional over `base`. */
export function canaryLimits(v: unknown, key: string, base: CanaryLimits): CanaryLimits {
  const o = obj(v, key);
  only(o, key, Object.keys(base));
  return {
    maxErrorRateIncrease: o.maxErrorRateIncrease !== undefined ? num(o.maxErrorRateIncrease, `${key}.maxErrorRateIncrease`, 0, 1) : base.maxErrorRateIncrease,
    maxLatencyFactor: o.maxLatencyFactor !== undefined ? num(o.maxLatencyFactor, `${key}.maxLatencyFactor`, 1, 1000) : base.maxLatencyFactor,
    minLatencyMs: o.minLatencyMs !== undefined ? num(o.minLatencyMs, `${key}.minLatencyMs`, 0, 3_600_000) : base.minLatencyMs,
    minRequests: o.minRequests !== undefined ? int(o.minRequests, `${key}.minRequests`, 1, 1_000_000_000) : base.minRequests,
  };
}

/** Builds a Config from a parsed YAML document merged with env and flag overrides. */
/**
 * `baseDir` is where relative file names in the document (the TLS pair) are
 * found: the config file's own directory. Under systemd the config arrives as a
 * credential (LoadCredential=), and a TLS pair loaded beside it is then named by
 * its credential name alone.
 */
export function buildConfig(doc: unknown, env: NodeJS.ProcessEnv = {}, flags: Record<string, string | undefined> = {}, baseDir = process.cwd()): Config {
  const root = obj(doc, '(root)');
  only(root, '', [
    'listen',
    'tls',
    'db',
    'operators',
    'heartbeat',
    'validators',
    'webhooks',
    'webhookRetry',
    'windows',
    'defaults',
    'tickMs',
    'logLevel',
    'chain',
    'limits',
  ]);
  const c: Config = structuredClone(DEFAULT_CONFIG);

  const listen = obj(root.listen, 'listen');
  only(listen, 'listen', ['host', 'port', 'socket']);
  const host = flags.host ?? env.GUTS_UPGRADE_HOST ?? listen.host;
  if (host !== undefined) c.listen.host = string(host, 'listen.host');
  const port = flags.port ?? env.GUTS_UPGRADE_PORT ?? listen.port;
  if (port === null || port === 'none' || port === false) c.listen.port = null;
  else if (port !== undefined) c.listen.port = int(port, 'listen.port', 0, 65535);
  const socket = flags.socket ?? env.GUTS_UPGRADE_SOCKET ?? listen.socket;
  if (socket !== undefined && socket !== null) c.listen.socket = string(socket, 'listen.socket');
  if (c.listen.port === null && !c.listen.socket) fail('listen', 'needs a port or a socket');

  if (root.tls !== undefined && root.tls !== null) {
    const tls = obj(root.tls, 'tls');
    only(tls, 'tls', ['cert', 'key']);
    const certPath = resolvePath(baseDir, string(tls.cert, 'tls.cert'));
    const keyPath = resolvePath(baseDir, string(tls.key, 'tls.key'));
    try {
      c.tls = { cert: readFileSync(certPath, 'utf8'), key: readFileSync(keyPath, 'utf8') };
    } catch (err) {
      fail('tls', `cannot read: ${(err as Error).message}`);
    }
  }

  const db = flags.db ?? env.GUTS_UPGRADE_DB ?? root.db;
  if (db !== undefined) c.db = string(db, 'db');

  if (root.operators !== undefined) {
    if (!Array.isArray(root.operators)) fail('operators', 'must be a list');
    const names = new Set<string>();
    c.operators = root.operators.map((o, i) => {
      const k = `operators[${i}]`;
      const e = obj(o, k);
      only(e, k, ['name', 'token', 'tokenSha256', 'role']);
      const name = string(e.name, `${k}.name`);
      if (names.has(name)) fail(`${k}.name`, `duplicate name ${name}`);
      names.add(name);
      const role = e.role;
      if (role !== 'viewer' && role !== 'operator') fail(`${k}.role`, 'must be "viewer" or "operator"');
      let tokenHash: string;
      if (e.tokenSha256 !== undefined) {
        tokenHash = string(e.tokenSha256, `${k}.tokenSha256`).toLowerCase();
        if (!/^[0-9a-f]{64}$/.test(tokenHash)) fail(`${k}.tokenSha256`, 'must be 64 hex characters');
      } else {
        const token = string(e.token, `${k}.token`);
        const problem = tokenProblem(token);
        if (problem) fail(`${k}.token`, problem);
        tokenHash = hashToken(token);
      }
      return { name, tokenHash, role };
    });
  }
  if (env.GUTS_UPGRADE_OPERATOR_TOKEN) {
    const problem = tokenProblem(env.GUTS_UPGRADE_OPERATOR_TOKEN);
    if (problem) fail('GUTS_UPGRADE_OPERATOR_TOKEN', problem);
    c.operators.push({ name: 'env-operator', tokenHash: hashToken(env.GUTS_UPGRADE_OPERATOR_TOKEN), role: 'operator' });
  }

  const hb = obj(root.heartbeat, 'heartbeat');
  only(hb, 'heartbeat', ['intervalMs', 'timeoutMs']);
  if (hb.intervalMs !== undefined) c.heartbeat.intervalMs = ms(hb.intervalMs, 'heartbeat.intervalMs');
  if (hb.timeoutMs !== undefined) c.heartbeat.timeoutMs = ms(hb.timeoutMs, 'heartbeat.timeoutMs');
  if (c.heartbeat.intervalMs < 100 || c.heartbeat.intervalMs > 600_000) fail('heartbeat.intervalMs', 'must be within [100, 600000]');
  if (c.heartbeat.timeoutMs <= c.heartbeat.intervalMs) fail('heartbeat.timeoutMs', 'must exceed heartbeat.intervalMs');

  if (root.validators !== undefined && root.validators !== null) c.validators = int(root.validators, 'validators', 1, 1000);

  const chain = obj(root.chain, 'chain');
  only(chain, 'chain', ['slackMargin', 'requireProducedBlock']);
  c.chain = { ...DEFAULT_CONFIG.chain };
  if (chain.slackMargin !== undefined) c.chain.slackMargin = int(chain.slackMargin, 'chain.slackMargin', 0);
  if (chain.requireProducedBlock !== undefined) {
    if (typeof chain.requireProducedBlock !== 'boolean') fail('chain.requireProducedBlock', 'must be true or false');
    c.chain.requireProducedBlock = chain.requireProducedBlock;
  }

  if (root.webhooks !== undefined) {
    if (!Array.isArray(root.webhooks)) fail('webhooks', 'must be a list');
    c.webhooks = root.webhooks.map((w, i) => {
      const k = `webhooks[${i}]`;
      const e = obj(w, k);
      only(e, k, ['url', 'secret', 'events']);
      const url = string(e.url, `${k}.url`);
      if (!/^https?:\/\/\S+$/.test(url)) fail(`${k}.url`, 'must be an http(s) URL');
      const secret = string(e.secret, `${k}.secret`);
      let events: string[] | null = null;
      if (e.events !== undefined) {
        if (!Array.isArray(e.events) || e.events.some((x) => typeof x !== 'string')) fail(`${k}.events`, 'must be a list of event types');
        events = e.events as string[];
      }
      return { url, secret, events };
    });
  }
  const wr = obj(root.webhookRetry, 'webhookRetry');
  only(wr, 'webhookRetry', ['maxAttempts', 'baseDelayMs', 'timeoutMs']);
  if (wr.maxAttempts !== undefined) c.webhookRetry.maxAttempts = int(wr.maxAttempts, 'webhookRetry.maxAttempts', 1, 100);
  if (wr.baseDelayMs !== undefined) c.webhookRetry.baseDelayMs = ms(wr.baseDelayMs, 'webhookRetry.baseDelayMs');
  if (wr.timeoutMs !== undefined) c.webhookRetry.timeoutMs = ms(wr.timeoutMs, 'webhookRetry.timeoutMs');

  if (root.windows !== undefined) {
    if (!Array.isArray(root.windows)) fail('windows', 'must be a list');
    const names = new Set<string>();
    c.windows = root.windows.map((w, i) => {
      const k = `windows[${i}]`;
      const e = obj(w, k);
      only(e, k, ['name', 'cron', 'duration']);
      const name = string(e.name, `${k}.name`);
      if (names.has(name)) fail(`${k}.name`, `duplicate window ${name}`);
      names.add(name);
      const cron = string(e.cron, `${k}.cron`);
      const bad = cronProblem(cron);
      if (bad) fail(`${k}.cron`, bad);
      // A bare number here once meant minutes; in the shared syntax it means milliseconds. Neither
      // reading is safe to guess for a window, so a window's length must name its unit.
      if (typeof e.duration === 'number' || (typeof e.duration === 'string' && /^\s*\d+\s*$/.test(e.duration))) {
        fail(
          `${k}.duration`,
          `must name its unit, like "2h" or "90m" (a bare number was minutes before, milliseconds elsewhere), got ${JSON.stringify(e.duration)}`,
        );
      }
      const durationMs = ms(e.duration, `${k}.duration`);
      if (durationMs <= 0) fail(`${k}.duration`, 'must be longer than zero');
      return { name, cron, durationMs };
    });
  }

  const d = obj(root.defaults, 'defaults');
  only(d, 'defaults', Object.keys(c.defaults));
  if (d.maxUnavailable !== undefined) c.defaults.maxUnavailable = int(d.maxUnavailable, 'defaults.maxUnavailable', 1, 1000);
  for (const k of ['stabilizationMs', 'soakMs', 'syncTimeoutMs', 'haltTimeoutMs'] as const) {
    if (d[k] !== undefined) c.defaults[k] = ms(d[k], `defaults.${k}`);
  }
  if (d.syncDistance !== undefined) c.defaults.syncDistance = int(d.syncDistance, 'defaults.syncDistance', 0, 1_000_000);
  if (d.canaryLimits !== undefined) c.defaults.canaryLimits = canaryLimits(d.canaryLimits, 'defaults.canaryLimits', c.defaults.canaryLimits);

  c.limits = limits(root.limits);

  if (root.tickMs !== undefined) c.tickMs = int(root.tickMs, 'tickMs', 10, 60_000);
  const level = flags['log-level'] ?? env.GUTS_UPGRADE_LOG_LEVEL ?? root.logLevel;
  if (level !== undefined) {
    if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(String(level))) fail('logLevel', 'must be a pino level');
    c.logLevel = String(level);
  }
  return c;
}

function limits(v: unknown): Limits {
  const base = DEFAULT_CONFIG.limits;
  const o = obj(v, 'limits');
  only(o, 'limits', ['agentMessages', 'api', 'refusedLogIntervalMs']);
  const am = obj(o.agentMessages, 'limits.agentMessages');
  only(am, 'limits.agentMessages', ['perSecond', 'burst']);
  const a = obj(o.api, 'limits.api');
  only(a, 'limits.api', ['max', 'windowMs']);
  const out: Limits = {
    agentMessages: {
      perSecond: am.perSecond !== undefined ? int(am.perSecond, 'limits.agentMessages.perSecond', 1, 100_000) : base.agentMessages.perSecond,
      burst: am.burst !== undefined ? int(am.burst, 'limits.agentMessages.burst', 1, 1_000_000) : base.agentMessages.burst,
    },
    api: {
      max: a.max !== undefined ? int(a.max, 'limits.api.max', 1, 100_000_000) : base.api.max,
      windowMs: a.windowMs !== undefined ? ms(a.windowMs, 'limits.api.windowMs') : base.api.windowMs,
    },
    refusedLogIntervalMs: o.refusedLogIntervalMs !== undefined ? ms(o.refusedLogIntervalMs, 'limits.refusedLogIntervalMs') : base.refusedLogIntervalMs,
  };
  // A burst below the rate would cut off an agent that keeps to the rate but sends a second's worth at once.
  if (out.agentMessages.burst < out.agentMessages.perSecond) fail('limits.agentMessages.burst', `must be at least perSecond (${out.agentMessages.perSecond})`);
  if (out.api.windowMs < 1000 || out.api.windowMs > 86_400_000) fail('limits.api.windowMs', 'must be within [1s, 1d]');
  if (out.refusedLogIntervalMs < 1000 || out.refusedLogIntervalMs > 86_400_000) fail('limits.refusedLogIntervalMs', 'must be within [1s, 1d]');
  return out;
}

export function loadConfig(path: string | undefined, env: NodeJS.ProcessEnv, flags: Record<string, string | undefined>): Config {
  let doc: unknown = {};
  if (path) {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new CodedError('E_CONFIG', `cannot read config ${path}: ${(err as Error).message}`, { key: 'config' });
    }
    try {
      doc = parseYaml(text) ?? {};
    } catch (err) {
      throw new CodedError('E_CONFIG', `config ${path} is not valid YAML: ${(err as Error).message}`, { key: 'config' });
    }
  }
  return buildConfig(doc, env, flags, path ? dirname(path) : process.cwd());
}
