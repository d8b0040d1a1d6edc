/**
 * The `blueGreen` section of the agent configuration: how a follower on a
 * docker host is upgraded beside itself instead of in place. Checked at load
 * so a bad key never reaches an upgrade; a validator with the section is
 * refused outright (two containers signing with one key risk double signing).
 *
 *   blueGreen:
 *     proxy: { kind: nginx, config: /etc/nginx/guts-upstream.conf, reload: [nginx, -s, reload] }
 *     slots:
 *       - { api: 127.0.0.1:18080, p2p: 127.0.0.1:19000, metrics: 127.0.0.1:19090 }
 *       - { api: 127.0.0.1:18081, p2p: 127.0.0.1:19001, metrics: 127.0.0.1:19091 }
 *     dataCopyDir: /srv/guts/blue-green
 */
import path from 'node:path';
import { CodedError, parseDurationMs } from '@guts-upgrade/protocol';

export type ProxyKind = 'nginx' | 'haproxy';

/** Where one of the two containers listens (host network): the live one uses one slot, the new one the other. */
export interface Slot {
  api: string;
  p2p: string | null;
  metrics: string | null;
}

export interface BlueGreenConfig {
  proxy: {
    kind: ProxyKind;
    /** The file the agent owns and rewrites: the upstream (nginx) or backend (haproxy) block, included by the operator's proxy config. */
    config: string;
    /** The upstream (nginx) or backend (haproxy) name the operator's config sends traffic to. */
    upstream: string;
    /** argv that reloads the proxy gracefully (nginx -s reload, systemctl reload haproxy); or pidFile. */
    reload: string[] | null;
    /** The proxy master's pid file: HUP for nginx, USR2 for haproxy in master-worker mode (-W). */
    pidFile: string | null;
  };
  slots: [Slot, Slot];
  /** The new container's own copy of the data lives in <dataCopyDir>/slot-<n>: never the live volume. */
  dataCopyDir: string;
  /** Extra environment of the new container; {dataDir} and {slot} are filled in. */
  env: Record<string, string>;
  /** After the proxy reload, how long the old container keeps serving the requests the proxy's old workers still hold. */
  drainMs: number;
}

function bad(key: string, reason: string, code: 'E_CONFIG' | 'E_BLUE_GREEN_VALIDATOR' = 'E_CONFIG'): never {
  throw new CodedError(code, `config blueGreen${key ? `.${key}` : ''}: ${reason}`, { key: `blueGreen${key ? `.${key}` : ''}` });
}

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function only(key: string, v: Record<string, unknown>, keys: string[]): void {
  for (const k of Object.keys(v)) if (!keys.includes(k)) bad(key ? `${key}.${k}` : k, `is not a known key (known: ${keys.join(', ')})`);
}

/** host:port on which a container of the host network listens. */
function addr(key: string, v: unknown, required: boolean): string | null {
  if (v === undefined || v === null) return required ? bad(key, 'is required (host:port)') : null;
  if (typeof v !== 'string' || !/^[A-Za-z0-9.:[\]-]+:\d{1,5}$/.test(v) || Number(v.split(':').pop()) > 65535) {
    bad(key, `must be host:port, got ${JSON.stringify(v)}`);
  }
  return v;
}

function slotOf(i: number, v: unknown): Slot {
  const key = `slots[${i}]`;
  if (!isMap(v)) bad(key, 'must be a mapping { api, p2p, metrics } of host:port addresses');
  only(key, v, ['api', 'p2p', 'metrics']);
  return { api: addr(`${key}.api`, v.api, true)!, p2p: addr(`${key}.p2p`, v.p2p, false), metrics: addr(`${key}.metrics`, v.metrics, false) };
}

/**
 * The section checked and resolved (paths absolute), or null when absent.
 * Needs role follower and the docker driver: E_BLUE_GREEN_VALIDATOR otherwise
 * for the role, E_CONFIG for the driver.
 */
export function resolveBlueGreen(raw: unknown, ctx: { role: string; driver: string; abs: (p: string) => string }): BlueGreenConfig | null {
  if (raw === undefined || raw === null) return null;
  if (ctx.role !== 'follower') {
    bad(
      '',
      'is set but role is validator: a validator is never upgraded blue-green (two containers signing with one key risk double signing); set role: follower only on a node outside the validator set',
      'E_BLUE_GREEN_VALIDATOR',
    );
  }
  if (ctx.driver !== 'docker') bad('', `needs service.driver docker (driver is ${ctx.driver})`);
  if (!isMap(raw)) bad('', 'must be a mapping');
  only('', raw, ['proxy', 'slots', 'dataCopyDir', 'env', 'drainMs']);
  const p = raw.proxy;
  if (!isMap(p)) bad('proxy', 'is required: { kind: nginx|haproxy, config: FILE, reload: [argv] or pidFile: FILE }');
  only('proxy', p, ['kind', 'config', 'upstream', 'reload', 'pidFile']);
  if (p.kind !== 'nginx' && p.kind !== 'haproxy') bad('proxy.kind', `must be nginx or haproxy, got ${JSON.stringify(p.kind)}`);
  if (typeof p.config !== 'string' || p.config === '') bad('proxy.config', 'is required: the upstream file the agent owns, included by the proxy config');
  const upstream = p.upstream ?? 'guts_api';
  if (typeof upstream !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(upstream))
    bad('proxy.upstream', `must be a name ([A-Za-z0-9_.-]), got ${JSON.stringify(upstream)}`);
  const reload = p.reload ?? null;
  if (reload !== null && (!Array.isArray(reload) || reload.length === 0 || !reload.every((x) => typeof x === 'string'))) {
    bad('proxy.reload', 'must be an argv (a non-empty array of strings, never a shell string)');
  }
  const pidFile = p.pidFile ?? null;
  if (pidFile !== null && typeof pidFile !== 'string') bad('proxy.pidFile', 'must be a path');
  if ((reload === null) === (pidFile === null)) bad('proxy', 'needs exactly one of reload (an argv) or pidFile (the proxy master is signalled)');
  const slots = raw.slots;
  if (!Array.isArray(slots) || slots.length !== 2)
    bad('slots', 'must list exactly two slots, { api, p2p, metrics } each: the live container uses one, the new one the other');
  const two = [slotOf(0, slots[0]), slotOf(1, slots[1])] as [Slot, Slot];
  for (const k of ['api', 'p2p', 'metrics'] as const) {
    if (two[0][k] !== null && two[0][k] === two[1][k]) bad(`slots[1].${k}`, `must differ from slots[0].${k}: both containers run at once on the host network`);
  }
  if (typeof raw.dataCopyDir !== 'string' || raw.dataCopyDir === '') bad('dataCopyDir', 'is required: where the new container gets its own copy of the data');
  const env = raw.env ?? {};
  if (!isMap(env) || !Object.values(env).every((x) => typeof x === 'string')) bad('env', 'must be a mapping of strings');
  const drainMs = raw.drainMs === undefined ? 2000 : parseDurationMs(raw.drainMs);
  if (drainMs === null || drainMs < 0) bad('drainMs', `must be a duration (ms, or "2s"), got ${JSON.stringify(raw.drainMs)}`);
  return {
    proxy: { kind: p.kind, config: ctx.abs(p.config), upstream, reload: reload as string[] | null, pidFile: pidFile === null ? null : ctx.abs(pidFile) },
    slots: two,
    dataCopyDir: ctx.abs(raw.dataCopyDir),
    env: env as Record<string, string>,
    drainMs,
  };
}

/** The copy of the data a slot's container runs on. */
export function slotDataDir(bg: BlueGreenConfig, slot: number): string {
  return path.join(bg.dataCopyDir, `slot-${slot}`);
}
