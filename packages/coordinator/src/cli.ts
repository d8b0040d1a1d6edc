#!/usr/bin/env node
/**
 * guts-upgrade — the operator CLI.
 *
 *   guts-upgrade [--url URL | --socket PATH] [--token T] [--json] COMMAND
 *   nodes                              list nodes
 *   nodes add ID [--address A]         register a node; prints its agent token once
 *   nodes remove ID                    revoke a node
 *   fleet                              fleet watch (skew, heights, down)
 *   plan  TARGET-FLAGS [ROLLOUT-FLAGS] dry run: waves and order
 *   rollout start TARGET-FLAGS [ROLLOUT-FLAGS]
 *   rollout list | status ID | events ID | watch ID
 *   rollout pause|resume|abort|rollback|approve ID [--reason R]
 *
 *   TARGET-FLAGS:  --version V --artifact-url U --sha256 H [--signature S]
 *   ROLLOUT-FLAGS: --strategy rolling|canary|halt --nodes a,b --max-unavailable N --stabilization-ms MS
 *                  --soak-ms MS --sync-distance N --sync-timeout-ms MS --canary ID --window NAME
 *                  --auto-rollback --allow-downgrade --require-approval
 * Env: GUTS_UPGRADE_URL, GUTS_UPGRADE_SOCKET, GUTS_UPGRADE_TOKEN.
 *
 * Exit codes: 0 ok; 1 the rollout failed, was aborted or rolled back (status/watch);
 *             2 usage error; 3 API error (refused request); 4 coordinator unreachable.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { api, ApiError, type ApiTarget } from './client.js';

export const EXIT = { OK: 0, ROLLOUT_FAILED: 1, USAGE: 2, API: 3, UNREACHABLE: 4 } as const;

const BOOL = new Set(['auto-rollback', 'allow-downgrade', 'require-approval', 'json', 'help']);

class UsageError extends Error {}

function parse(argv: string[]): { pos: string[]; flags: Record<string, string | true> } {
  const pos: string[] = [];
  const flags: Record<string, string | true> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m) {
      pos.push(a);
      continue;
    }
    if (BOOL.has(m[1]!)) flags[m[1]!] = true;
    else {
      const v = m[2] ?? argv[++i];
      if (v === undefined) throw new UsageError(`--${m[1]} needs a value`);
      flags[m[1]!] = v;
    }
  }
  return { pos, flags };
}

function intFlag(flags: Record<string, string | true>, name: string): number | undefined {
  const v = flags[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !/^\d+$/.test(v)) throw new UsageError(`--${name} must be a non-negative integer`);
  return Number(v);
}

function rolloutBody(flags: Record<string, string | true>): Record<string, unknown> {
  for (const k of ['version', 'artifact-url', 'sha256']) if (typeof flags[k] !== 'string') throw new UsageError(`--${k} is required`);
  const options: Record<string, unknown> = {};
  const ints: [string, string][] = [
    ['max-unavailable', 'maxUnavailable'],
    ['stabilization-ms', 'stabilizationMs'],
    ['soak-ms', 'soakMs'],
    ['sync-distance', 'syncDistance'],
    ['sync-timeout-ms', 'syncTimeoutMs'],
    ['halt-timeout-ms', 'haltTimeoutMs'],
  ];
  for (const [f, k] of ints) {
    const v = intFlag(flags, f);
    if (v !== undefined) options[k] = v;
  }
  if (flags['auto-rollback']) options.autoRollback = true;
  if (flags['allow-downgrade']) options.allowDowngrade = true;
  if (flags['require-approval']) options.requireApproval = true;
  if (typeof flags.canary === 'string') options.canary = flags.canary;
  if (typeof flags.window === 'string') options.window = flags.window;
  return {
    target: {
      version: flags.version,
      url: flags['artifact-url'],
      sha256: flags.sha256,
      ...(typeof flags.signature === 'string' ? { signature: flags.signature } : {}),
    },
    ...(typeof flags.strategy === 'string' ? { strategy: flags.strategy } : {}),
    ...(typeof flags.nodes === 'string' ? { nodes: flags.nodes.split(',').filter(Boolean) } : {}),
    ...(Object.keys(options).length ? { options } : {}),
  };
}

const FINAL_OK = ['completed'];
const FINAL_BAD = ['failed', 'aborted', 'rolled_back'];

function fmtTime(ms: number | null): string {
  return ms == null ? '-' : new Date(ms).toISOString().slice(11, 19);
}

export function renderRollout(d: any): string {
  const r = d.rollout;
  const lines = [
    `rollout ${r.id}  ${r.strategy}  ${r.fromVersion ?? '?'} -> ${r.target.version}  state=${r.state}${r.code ? `  code=${r.code}` : ''}`,
    ...(r.reason ? [`  reason: ${r.reason}`] : []),
    `  waves: ${r.waves.map((w: string[]) => `[${w.join(' ')}]`).join(' ')}`,
    '  node            step          progress              downtime  started   code',
  ];
  for (const s of d.steps) {
    lines.push(
      `  ${s.nodeId.padEnd(15)} ${s.state.padEnd(13)} ${(s.progress ?? '').padEnd(21)} ${(s.downtimeMs != null ? `${Math.round(s.downtimeMs)}ms` : '-').padStart(8)}  ${fmtTime(s.startedAt).padEnd(8)}  ${s.code ?? ''}`,
    );
  }
  return lines.join('\n');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function runCli(argv: string[], env: NodeJS.ProcessEnv, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  let parsed;
  try {
    parsed = parse(argv);
  } catch (e) {
    err(`${(e as Error).message}\n`);
    return EXIT.USAGE;
  }
  const { pos, flags } = parsed;
  const help = () => out('usage: guts-upgrade [--url URL|--socket PATH] [--token T] nodes|fleet|plan|rollout ... (see docs)\n');
  if (flags.help || pos.length === 0) {
    help();
    return pos.length === 0 && !flags.help ? EXIT.USAGE : EXIT.OK;
  }
  const target: ApiTarget = {};
  const url = (flags.url as string | undefined) ?? env.GUTS_UPGRADE_URL;
  const socket = (flags.socket as string | undefined) ?? env.GUTS_UPGRADE_SOCKET;
  const token = (flags.token as string | undefined) ?? env.GUTS_UPGRADE_TOKEN;
  if (socket) target.socket = socket;
  else target.url = url ?? 'http://127.0.0.1:7600';
  if (token) target.token = token;
  const json = !!flags.json;
  const show = (v: unknown, text: () => string) => out((json ? JSON.stringify(v, null, 2) : text()) + '\n');

  try {
    const [cmd, sub, arg] = pos;
    switch (cmd) {
      case 'nodes': {
        if (!sub || sub === 'list') {
          const r = await api(target, 'GET', '/api/v1/nodes');
          show(r, () =>
            r.nodes.map((n: any) => `${n.id.padEnd(16)} ${(n.version ?? '?').padEnd(10)} ${n.connected ? 'connected' : 'offline  '} ${n.healthy ? 'healthy  ' : 'unhealthy'} ${n.isLeader ? 'leader' : ''}`).join('\n') || '(no nodes)',
          );
          return EXIT.OK;
        }
        if (sub === 'add') {
          if (!arg) throw new UsageError('nodes add ID');
          const r = await api(target, 'POST', '/api/v1/nodes', { id: arg, ...(typeof flags.address === 'string' ? { address: flags.address } : {}) });
          show(r, () => `registered ${r.id}\ntoken: ${r.token}\n(shown once: put it in the agent's configuration)`);
          return EXIT.OK;
        }
        if (sub === 'remove') {
          if (!arg) throw new UsageError('nodes remove ID');
          const r = await api(target, 'DELETE', `/api/v1/nodes/${encodeURIComponent(arg)}`);
          show(r, () => `removed ${arg}`);
          return EXIT.OK;
        }
        throw new UsageError(`unknown nodes subcommand ${sub}`);
      }
      case 'fleet': {
        const r = await api(target, 'GET', '/api/v1/fleet');
        show(r, () =>
          [
            `n=${r.n} f=${r.f} quorum=${r.quorum} budget=${r.disruptionBudget} leader=${r.leader ?? '?'}`,
            `versions: ${Object.entries(r.versions).map(([v, c]) => `${v}×${c}`).join(' ')}  heights ${r.heights.min}..${r.heights.max}`,
            ...r.alerts.map((a: any) => `ALERT ${a.code}: ${a.message}`),
          ].join('\n'),
        );
        return EXIT.OK;
      }
      case 'plan': {
        const body = rolloutBody(flags);
        const r = await api(target, 'POST', '/api/v1/rollouts/plan', body);
        const p = r.plan;
        show(r, () =>
          [
            `plan ${p.strategy}: ${p.fromVersion ?? '?'} -> ${p.target.version} (${p.path?.kind ?? 'n/a'}) n=${p.n} f=${p.f} maxUnavailable=${p.maxUnavailable}`,
            ...p.waves.map((w: string[], i: number) => `  wave ${i + 1}: ${w.join(', ')}`),
            ...(p.skip.length ? [`  skip (already on target): ${p.skip.join(', ')}`] : []),
            ...(p.requiresApproval ? ['  requires approval'] : []),
            ...(p.window ? [`  window ${p.window.name}: ${p.window.open ? 'open' : `closed, next ${p.window.nextOpening}`}`] : []),
            ...p.warnings.map((w: string) => `  warning: ${w}`),
          ].join('\n'),
        );
        return EXIT.OK;
      }
      case 'rollout': {
        if (sub === 'start') {
          const r = await api(target, 'POST', '/api/v1/rollouts', rolloutBody(flags));
          show(r, () => `started ${r.rollout.id}\n${renderRollout(r)}`);
          return EXIT.OK;
        }
        if (sub === 'list') {
          const r = await api(target, 'GET', '/api/v1/rollouts');
          show(r, () => r.rollouts.map((x: any) => `${x.id}  ${x.strategy.padEnd(7)} ${x.target.version.padEnd(8)} ${x.state}`).join('\n') || '(none)');
          return EXIT.OK;
        }
        if (!arg) throw new UsageError(`rollout ${sub ?? ''} needs a rollout id`);
        const id = encodeURIComponent(arg);
        if (sub === 'status') {
          const r = await api(target, 'GET', `/api/v1/rollouts/${id}`);
          show(r, () => renderRollout(r));
          return FINAL_BAD.includes(r.rollout.state) ? EXIT.ROLLOUT_FAILED : EXIT.OK;
        }
        if (sub === 'events') {
          const r = await api(target, 'GET', `/api/v1/rollouts/${id}/events`);
          show(r, () => r.events.filter((e: any) => e.type !== 'node.progress').map((e: any) => `${e.at} ${e.actor.padEnd(18)} ${e.type.padEnd(20)} ${e.nodeId ?? ''} ${JSON.stringify(e.data)}`).join('\n'));
          return EXIT.OK;
        }
        if (sub === 'watch') {
          let last = '';
          let after = 0;
          for (;;) {
            const r = await api(target, 'GET', `/api/v1/rollouts/${id}`);
            const ev = await api(target, 'GET', `/api/v1/rollouts/${id}/events?after=${after}`);
            for (const e of ev.events) {
              after = e.seq;
              if (!json && e.type !== 'node.progress' && e.type !== 'command.sent') out(`${e.at.slice(11, 23)} ${e.type} ${e.nodeId ?? ''} ${e.data.code ?? ''}\n`);
              if (!json && e.type === 'node.progress') out(`${e.at.slice(11, 23)}   ${e.nodeId} ${e.data.step} ${e.data.state}\n`);
            }
            const text = renderRollout(r);
            if (json && text !== last) out(JSON.stringify(r) + '\n');
            last = text;
            if (FINAL_OK.includes(r.rollout.state) || FINAL_BAD.includes(r.rollout.state)) {
              if (!json) out(text + '\n');
              return FINAL_OK.includes(r.rollout.state) ? EXIT.OK : EXIT.ROLLOUT_FAILED;
            }
            await sleep(Number(env.GUTS_UPGRADE_WATCH_MS ?? 500));
          }
        }
        if (['pause', 'resume', 'abort', 'rollback', 'approve'].includes(sub ?? '')) {
          const r = await api(target, 'POST', `/api/v1/rollouts/${id}/${sub}`, typeof flags.reason === 'string' ? { reason: flags.reason } : {});
          show(r, () => `${sub}: ${r.rollout.id} is ${r.rollout.state}`);
          return EXIT.OK;
        }
        throw new UsageError(`unknown rollout subcommand ${sub ?? ''}`);
      }
      default:
        throw new UsageError(`unknown command ${cmd}`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      err(`usage: ${e.message}\n`);
      return EXIT.USAGE;
    }
    if (e instanceof ApiError) {
      err(`error ${e.status} ${e.message}\n`);
      return EXIT.API;
    }
    err(`cannot reach the coordinator: ${(e as Error).message}\n`);
    return EXIT.UNREACHABLE;
  }
}

// Compared through realpath: started via a symlink (an npm bin link, /opt/guts-upgrade
// pointing at a release dir) argv[1] is the link while import.meta.url is resolved.
const isMain = process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  runCli(process.argv.slice(2), process.env, (s) => process.stdout.write(s), (s) => process.stderr.write(s)).then((code) => process.exit(code));
}
