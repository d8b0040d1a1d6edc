#!/usr/bin/env node
/**
 * guts-upgrade — the operator CLI. `guts-upgrade help` and `guts-upgrade help COMMAND`
 * list every command and flag; docs/operating.md shows them in use.
 *
 * Where it finds the coordinator: --url, else GUTS_UPGRADE_URL, else http://127.0.0.1:7600
 * (--socket / GUTS_UPGRADE_SOCKET for the unix socket instead); the bearer token from
 * --token or GUTS_UPGRADE_TOKEN.
 *
 * Exit codes: 0 ok; 1 the rollout failed, was aborted or rolled back (status/watch);
 *             2 usage error; 3 API error (refused request); 4 coordinator unreachable;
 *             5 the rollout paused and waits for an operator (watch).
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { asArgParser, ERROR_CODES, httpUrlArg, isErrorCode, nonNegativeIntArg, pubkeyArg, sha256Arg, type FailureEvidence } from '@guts-upgrade/protocol';
import {
  api,
  ApiError,
  type ApiTarget,
  type EventsBody,
  type FleetBody,
  type NodeListBody,
  type NodeRegisteredBody,
  type PlanBody,
  type RolloutDetailBody,
  type RolloutListBody,
} from './client.js';
import type { Plan } from './planner.js';
import { STRATEGIES } from './model.js';
import { ACTIONS, type OperatorAction } from './states.js';
import { PRODUCT_VERSION } from './version.js';

export const EXIT = { OK: 0, ROLLOUT_FAILED: 1, USAGE: 2, API: 3, UNREACHABLE: 4, PAUSED: 5 } as const;

export const DEFAULT_URL = 'http://127.0.0.1:7600';

export interface CliIo {
  env: NodeJS.ProcessEnv;
  out(s: string): void;
  err(s: string): void;
}

interface GlobalOpts {
  url?: string;
  socket?: string;
  token?: string;
  json?: boolean;
}

// ---- argument parsers: each throws InvalidArgumentError, which commander reports as a usage error.

const nonNegativeInt = asArgParser(nonNegativeIntArg, InvalidArgumentError);
const sha256Hex = asArgParser(sha256Arg, InvalidArgumentError);
const httpUrl = asArgParser(httpUrlArg, InvalidArgumentError);

function nodeList(v: string): string[] {
  const ids = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (ids.length === 0) throw new InvalidArgumentError('must name at least one node id (a,b,c)');
  return ids;
}

// ---- the rollout request built from flags

interface TargetFlags {
  to: string;
  artifactUrl: string;
  sha256: string;
  signature?: string;
}

interface RolloutFlags extends TargetFlags {
  strategy?: string;
  nodes?: string[];
  maxUnavailable?: number;
  stabilizationMs?: number;
  soakMs?: number;
  syncDistance?: number;
  syncTimeoutMs?: number;
  haltTimeoutMs?: number;
  canary?: string;
  window?: string;
  autoRollback?: boolean;
  allowDowngrade?: boolean;
  requireApproval?: boolean;
  requireJudgedSoak?: boolean;
}

/** Flag name → API option key, for the numeric and boolean rollout options passed through as they are. */
const PASS_THROUGH: (keyof RolloutFlags)[] = [
  'maxUnavailable',
  'stabilizationMs',
  'soakMs',
  'syncDistance',
  'syncTimeoutMs',
  'haltTimeoutMs',
  'canary',
  'window',
  'autoRollback',
  'allowDowngrade',
  'requireApproval',
  'requireJudgedSoak',
];

export function rolloutBody(f: RolloutFlags): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  for (const k of PASS_THROUGH) if (f[k] !== undefined) options[k] = f[k];
  return {
    target: { version: f.to, url: f.artifactUrl, sha256: f.sha256, ...(f.signature ? { signature: f.signature } : {}) },
    ...(f.strategy ? { strategy: f.strategy } : {}),
    ...(f.nodes ? { nodes: f.nodes } : {}),
    ...(Object.keys(options).length ? { options } : {}),
  };
}

function withRolloutFlags(cmd: Command): Command {
  return cmd
    .requiredOption('--to <version>', 'the version to upgrade to (semver)')
    .requiredOption('--artifact-url <url>', 'where agents download the guts-node binary', httpUrl)
    .requiredOption('--sha256 <hex>', "the binary's sha256 (64 hex characters)", sha256Hex)
    .option('--signature <base64>', "the release key's signature over the sha256")
    .addOption(new Option('--strategy <name>', 'how to sequence the nodes').choices([...STRATEGIES]))
    .option('--nodes <ids>', 'only these nodes, comma-separated (default: all)', nodeList)
    .option('--max-unavailable <n>', 'nodes down at once (never more than f)', nonNegativeInt)
    .option('--stabilization-ms <ms>', 'pause after each synced wave', nonNegativeInt)
    .option('--soak-ms <ms>', 'canary soak duration', nonNegativeInt)
    .option('--sync-distance <n>', 'blocks behind the fleet that still count as synced', nonNegativeInt)
    .option('--sync-timeout-ms <ms>', 'how long an upgraded node may take to sync', nonNegativeInt)
    .option('--halt-timeout-ms <ms>', 'how long the network may take to finalize again after a halt upgrade', nonNegativeInt)
    .option('--canary <id>', 'the canary node (strategy canary)')
    .option('--window <name>', 'start only inside this configured maintenance window')
    .option('--auto-rollback', 'roll every upgraded node back when a node fails')
    .option('--allow-downgrade', 'allow a target older than the running version')
    .option('--require-approval', 'wait for `rollout approve` before starting')
    .option('--require-judged-soak', "fail the canary's soak when its metrics judged nothing (too few requests, no reference)");
}

// ---- rendering

const FINAL_OK = ['completed'];
const FINAL_BAD = ['failed', 'aborted', 'rolled_back'];

function fmtTime(ms: number | null): string {
  return ms == null ? '-' : new Date(ms).toISOString().slice(11, 19);
}

export function renderRollout(d: RolloutDetailBody): string {
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
  for (const s of d.steps) if (s.code && s.state === 'failed') lines.push(...renderFailure(s));
  return lines.join('\n');
}

/** A failed node's evidence under the table: what failed, the check that decided it, the node's own last words. */
export function renderFailure(s: Pick<RolloutDetailBody['steps'][number], 'nodeId' | 'code' | 'message' | 'evidence'>): string[] {
  // A message often starts with its own code already; say it once.
  const message = s.message?.startsWith(`${s.code}: `) ? s.message.slice(`${s.code}: `.length) : s.message;
  const out = [`  ${s.nodeId} failed ${s.code}${message ? `: ${message}` : ''}`];
  const ev = s.evidence;
  if (ev?.check) {
    const extra = [ev.check.last !== undefined ? `last ${ev.check.last}` : '', ev.check.waitedMs !== undefined ? `waited ${ev.check.waitedMs} ms` : ''].filter(
      Boolean,
    );
    out.push(`    check ${ev.check.name}: ${ev.check.detail}${extra.length ? ` (${extra.join(', ')})` : ''}`);
  }
  if (ev?.nodeLog.length) {
    out.push(`    node log, last ${ev.nodeLog.length} line${ev.nodeLog.length === 1 ? '' : 's'}:`);
    for (const l of ev.nodeLog) out.push(`      | ${l}`);
  } else out.push('    node log: none sent (an agent older than protocol 1.3, or the node wrote nothing)');
  return out;
}

function renderPlan(p: Plan): string {
  return [
    `plan ${p.strategy}: ${p.fromVersion ?? '?'} -> ${p.target.version} (${p.path?.kind ?? 'n/a'}) n=${p.n} f=${p.f} maxUnavailable=${p.maxUnavailable}`,
    ...p.waves.map(
      (w: string[], i: number) =>
        `  wave ${i + 1}: ${w.join(', ')}${p.chain ? `  (weight ${p.chain.waveWeights[i]} down, slack left ${p.chain.slackLeft[i]})` : ''}`,
    ),
    ...(p.chain
      ? [
          `  chain: epoch ${p.chain.epoch}, total weight ${p.chain.totalWeight}, quorum ${p.chain.quorumWeight}, largest slack ${p.chain.largestSlack}, slack proven now ${p.chain.slackNow}`,
        ]
      : []),
    ...(p.skip.length ? [`  skip (already on target): ${p.skip.join(', ')}`] : []),
    ...(p.requiresApproval ? ['  requires approval'] : []),
    ...(p.window ? [`  window ${p.window.name}: ${p.window.open ? 'open' : `closed, next ${p.window.nextOpening}`}`] : []),
    ...p.warnings.map((w: string) => `  warning: ${w}`),
  ].join('\n');
}

/** A passed soak, saying plainly when its metrics judged nothing. */
type SoakData = { metrics?: { judged?: boolean; detail?: string } };
function soakLine(nodeId: string | null, data: SoakData): string {
  const m = data.metrics;
  return m?.judged === false
    ? `canary ${nodeId ?? ''} passed its soak, but its metrics judged nothing: ${m.detail ?? 'no detail'}`
    : `canary ${nodeId ?? ''} passed its soak${m?.detail ? `: ${m.detail}` : ''}`;
}

/** What an operator can do about a paused rollout, as commands to copy. */
export function pausedAdvice(id: string, reason: string | null): string {
  return [
    `rollout ${id} is paused${reason ? `: ${reason}` : ''}`,
    'it waits for an operator; next, one of:',
    `  guts-upgrade rollout resume ${id}      # continue where it stopped`,
    `  guts-upgrade rollout abort ${id}       # stop here; upgraded nodes stay upgraded`,
    `  guts-upgrade rollout rollback ${id}    # return every upgraded node to its previous version`,
  ].join('\n');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---- the program

/**
 * Builds the command tree. Each action stores its exit code in `code`; commander's own
 * errors (unknown command or flag, a bad value, a missing required flag) are usage errors.
 */
export function buildProgram(io: CliIo, result: { code: number }): Command {
  const program = new Command('guts-upgrade')
    .description('Plan, start, watch and steer guts-node rollouts through the guts-upgrade coordinator.')
    .version(PRODUCT_VERSION, '-V, --version', 'print the guts-upgrade version')
    .option('--url <url>', `the coordinator's API (env GUTS_UPGRADE_URL; default ${DEFAULT_URL})`)
    .option('--socket <path>', "the coordinator's unix socket instead of --url (env GUTS_UPGRADE_SOCKET)")
    .option('--token <token>', 'bearer token of an operator or viewer (env GUTS_UPGRADE_TOKEN)')
    .option('--json', 'print the API answer as JSON (watch: NDJSON, one line per change)')
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .exitOverride();

  const target = (cmd: Command): { t: ApiTarget; json: boolean } => {
    const g = cmd.optsWithGlobals<GlobalOpts>();
    const socket = g.socket ?? io.env.GUTS_UPGRADE_SOCKET;
    const token = g.token ?? io.env.GUTS_UPGRADE_TOKEN;
    const t: ApiTarget = socket ? { socket } : { url: g.url ?? io.env.GUTS_UPGRADE_URL ?? DEFAULT_URL };
    if (token) t.token = token;
    return { t, json: !!g.json };
  };
  const show = (json: boolean, v: unknown, text: () => string) => io.out(`${json ? JSON.stringify(v, null, 2) : text()}\n`);

  // nodes
  const nodes = program.command('nodes').description('list, register and revoke validator nodes');
  nodes
    .command('list', { isDefault: true })
    .description('list the registered nodes with version, connection and health')
    .action(async (_o, cmd: Command) => {
      const { t, json } = target(cmd);
      const r = await api<NodeListBody>(t, 'GET', '/api/v1/nodes');
      show(
        json,
        r,
        () =>
          r.nodes
            .map(
              (n) =>
                `${n.id.padEnd(16)} ${(n.version ?? '?').padEnd(10)} ${n.connected ? 'connected' : 'offline  '} ${n.healthy ? 'healthy  ' : 'unhealthy'} ${n.isLeader ? 'leader' : ''}`,
            )
            .join('\n') || '(no nodes)',
      );
    });
  nodes
    .command('add')
    .description("register a node; prints its agent token once (put it in that agent's configuration)")
    .argument('<id>', 'the node id the agent will use')
    .option('--address <addr>', 'a note of where the node runs')
    .option('--pubkey <hex>', "the chain validator the node runs as (else the agent's validatorPubkey binds it)", asArgParser(pubkeyArg, InvalidArgumentError))
    .action(async (id: string, o: { address?: string; pubkey?: string }, cmd: Command) => {
      const { t, json } = target(cmd);
      const r = await api<NodeRegisteredBody>(t, 'POST', '/api/v1/nodes', {
        id,
        ...(o.address ? { address: o.address } : {}),
        ...(o.pubkey ? { pubkey: o.pubkey } : {}),
      });
      show(json, r, () => `registered ${r.id}\ntoken: ${r.token}\n(shown once: put it in the agent's configuration)`);
    });
  nodes
    .command('remove')
    .description("revoke a node: its agent's token stops working")
    .argument('<id>', 'the node id')
    .action(async (id: string, _o, cmd: Command) => {
      const { t, json } = target(cmd);
      const r = await api(t, 'DELETE', `/api/v1/nodes/${encodeURIComponent(id)}`);
      show(json, r, () => `removed ${id}`);
    });

  program
    .command('fleet')
    .description('the fleet at a glance: n, f, quorum, leader, versions, heights, alerts')
    .action(async (_o, cmd: Command) => {
      const { t, json } = target(cmd);
      const r = await api<FleetBody>(t, 'GET', '/api/v1/fleet');
      show(json, r, () =>
        [
          `n=${r.n} f=${r.f} quorum=${r.quorum} budget=${r.disruptionBudget} leader=${r.leader ?? '?'}`,
          `versions: ${Object.entries(r.versions)
            .map(([v, c]) => `${v}×${c}`)
            .join(' ')}  heights ${r.heights.min}..${r.heights.max}`,
          ...chainLines(r.chain, r.reportedSets),
          ...r.alerts.map((a) => `ALERT ${a.code}: ${a.message}`),
        ].join('\n'),
      );
    });

  const chain = program.command('chain').description("the chain's validator set as the coordinator believes it");
  chain
    .command('confirm')
    .description('believe a validator set that fewer than f + 1 managed validators report (digest from `guts-upgrade fleet`)')
    .argument('<digest>', "the reported set's digest, 16 hex characters")
    .action(async (digest: string, _o, cmd: Command) => {
      const { t, json } = target(cmd);
      const r = await api<{ digest: string; epoch: number; confirmed: boolean }>(t, 'POST', '/api/v1/chain/confirm', { digest });
      show(json, r, () => `confirmed the validator set of epoch ${r.epoch} (${digest})`);
    });

  withRolloutFlags(program.command('plan').description('dry run: the waves and order a rollout would take; changes nothing')).action(
    async (o: RolloutFlags, cmd: Command) => {
      const { t, json } = target(cmd);
      const r = await api<PlanBody>(t, 'POST', '/api/v1/rollouts/plan', rolloutBody(o));
      show(json, r, () => renderPlan(r.plan));
    },
  );

  const rollout = program.command('rollout').description('start, inspect and steer rollouts');
  withRolloutFlags(rollout.command('start').description('start a rollout (see `plan` for a dry run first)')).action(async (o: RolloutFlags, cmd: Command) => {
    const { t, json } = target(cmd);
    const r = await api<RolloutDetailBody>(t, 'POST', '/api/v1/rollouts', rolloutBody(o));
    show(json, r, () => `started ${r.rollout.id}\n${renderRollout(r)}`);
  });
  rollout
    .command('list')
    .description('every rollout, newest first')
    .action(async (_o, cmd: Command) => {
      const { t, json } = target(cmd);
      const r = await api<RolloutListBody>(t, 'GET', '/api/v1/rollouts');
      show(json, r, () => r.rollouts.map((x) => `${x.id}  ${x.strategy.padEnd(7)} ${x.target.version.padEnd(8)} ${x.state}`).join('\n') || '(none)');
    });
  rollout
    .command('status')
    .description("one rollout: state, waves and each node's step (exit 1 if it failed, was aborted or rolled back)")
    .argument('<id>', 'the rollout id')
    .action(async (id: string, _o, cmd: Command) => {
      const { t, json } = target(cmd);
      const r = await api<RolloutDetailBody>(t, 'GET', `/api/v1/rollouts/${encodeURIComponent(id)}`);
      show(json, r, () => renderRollout(r));
      if (FINAL_BAD.includes(r.rollout.state)) result.code = EXIT.ROLLOUT_FAILED;
    });
  rollout
    .command('events')
    .description("a rollout's audit log")
    .argument('<id>', 'the rollout id')
    .action(async (id: string, _o, cmd: Command) => {
      const { t, json } = target(cmd);
      const r = await api<EventsBody>(t, 'GET', `/api/v1/rollouts/${encodeURIComponent(id)}/events`);
      show(json, r, () =>
        r.events
          .filter((e) => e.type !== 'node.progress')
          .map((e) => `${e.at} ${e.actor.padEnd(18)} ${e.type.padEnd(20)} ${e.nodeId ?? ''} ${JSON.stringify(e.data)}`)
          .join('\n'),
      );
    });
  rollout
    .command('watch')
    .description('follow a rollout until it ends (exit 0 completed, 1 failed/aborted/rolled back, 5 paused)')
    .argument('<id>', 'the rollout id')
    .action(async (id: string, _o, cmd: Command) => {
      const { t, json } = target(cmd);
      result.code = await watch(t, encodeURIComponent(id), json, io);
    });
  for (const action of Object.keys(ACTIONS) as OperatorAction[]) {
    rollout
      .command(action)
      .description(`${action} a rollout (valid while it is ${ACTIONS[action].join(', ')})`)
      .argument('<id>', 'the rollout id')
      .option('--reason <text>', 'recorded in the audit log')
      .action(async (id: string, o: { reason?: string }, cmd: Command) => {
        const { t, json } = target(cmd);
        const r = await api<RolloutDetailBody>(t, 'POST', `/api/v1/rollouts/${encodeURIComponent(id)}/${action}`, o.reason ? { reason: o.reason } : {});
        show(json, r, () => `${action}: ${r.rollout.id} is ${r.rollout.state}`);
      });
  }
  return program;
}

async function watch(t: ApiTarget, id: string, json: boolean, io: CliIo): Promise<number> {
  let last = '';
  let after = 0;
  for (;;) {
    const r = await api<RolloutDetailBody>(t, 'GET', `/api/v1/rollouts/${id}`);
    const ev = await api<EventsBody>(t, 'GET', `/api/v1/rollouts/${id}/events?after=${after}`);
    for (const e of ev.events) {
      after = e.seq;
      if (json) io.out(`${JSON.stringify({ event: e })}\n`);
      else if (e.type === 'node.progress')
        io.out(`${e.at.slice(11, 23)}   ${e.nodeId} ${e.data.step} ${e.data.state}${e.data.message ? `: ${e.data.message}` : ''}\n`);
      else if (e.type === 'rollout.waiting') io.out(`${e.at.slice(11, 23)} waiting: ${e.data.reason}\n`);
      else if (e.type === 'node.agent_lost') io.out(`${e.at.slice(11, 23)} node.agent_lost ${e.nodeId ?? ''} E_AGENT_LOST: ${e.data.message}\n`);
      else if (e.type === 'canary.passed') io.out(`${e.at.slice(11, 23)} ${soakLine(e.nodeId, e.data as SoakData)}\n`);
      else if (e.type === 'node.failed' && (e.data.evidence as FailureEvidence | undefined)?.check) {
        const c = (e.data.evidence as FailureEvidence).check!;
        io.out(`${e.at.slice(11, 23)} node.failed ${e.nodeId ?? ''} ${e.data.code ?? ''}: check ${c.name}: ${c.detail}\n`);
      } else if (e.type !== 'command.sent') io.out(`${e.at.slice(11, 23)} ${e.type} ${e.nodeId ?? ''} ${e.data.code ?? ''}\n`);
    }
    const text = renderRollout(r);
    if (json && text !== last) io.out(`${JSON.stringify({ rollout: r.rollout, steps: r.steps })}\n`);
    last = text;
    const state: string = r.rollout.state;
    if (FINAL_OK.includes(state) || FINAL_BAD.includes(state)) {
      if (!json) io.out(`${text}\n`);
      return FINAL_OK.includes(state) ? EXIT.OK : EXIT.ROLLOUT_FAILED;
    }
    if (state === 'paused') {
      // A paused rollout waits for a person: say so and hand the terminal back instead of polling forever.
      if (!json) io.out(`${text}\n${pausedAdvice(r.rollout.id, r.rollout.reason ?? null)}\n`);
      return EXIT.PAUSED;
    }
    await sleep(Number(io.env.GUTS_UPGRADE_WATCH_MS ?? 500));
  }
}

/**
 * `--version` once named the rollout's target; it now prints the CLI's version wherever it
 * stands. After a subcommand it is almost surely the old habit, and printing a version
 * with exit 0 would look like success: refuse it and point at --to.
 */
function oldTargetFlag(argv: string[]): boolean {
  const valued = new Set(['--url', '--socket', '--token']);
  let i = 0;
  while (i < argv.length && argv[i]!.startsWith('-')) i += valued.has(argv[i]!) ? 2 : 1;
  return i < argv.length && argv.slice(i + 1).some((a) => a === '--version' || a.startsWith('--version='));
}

export async function runCli(argv: string[], env: NodeJS.ProcessEnv, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const io: CliIo = { env, out, err };
  const result: { code: number } = { code: EXIT.OK };
  const program = buildProgram(io, result);
  if (argv.length === 0) {
    err(program.helpInformation());
    return EXIT.USAGE;
  }
  if (oldTargetFlag(argv)) {
    err("error: --version after a command: the target version flag is --to VERSION (`guts-upgrade --version` prints this CLI's version)\n");
    return EXIT.USAGE;
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
    return result.code;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help, -h, `help` and --version end here too, with exit code 0.
      return e.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
    }
    if (e instanceof ApiError) {
      err(`error ${e.status} ${e.message}\n`);
      // The catalogue says what an operator does next about each code.
      if (isErrorCode(e.code)) err(`what to do: ${ERROR_CODES[e.code].action}\n`);
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
  runCli(
    process.argv.slice(2),
    process.env,
    (s) => process.stdout.write(s),
    (s) => process.stderr.write(s),
  ).then((code) => process.exit(code));
}

/** The chain's view in the fleet summary: the set, the slack, and each validator's evidence. */
function chainLines(chain: FleetBody['chain'], reported: FleetBody['reportedSets']): string[] {
  if (!chain) return [];
  const head = `chain: ${chain.status} epoch ${chain.epoch} weight ${chain.totalWeight} quorum ${chain.quorumWeight} slack ${chain.slack} (largest ${chain.largestSlack}) reference height ${chain.referenceHeight ?? '?'}`;
  const rows = chain.validators.map(
    (v) =>
      `  ${v.name.padEnd(14)} w=${String(v.weight).padEnd(3)} ${(v.managed ? `node ${v.node}` : 'unmanaged').padEnd(18)} ${v.live ? 'live ' : 'DOWN '} ${v.evidence}`,
  );
  const sets = chain.status === 'adopted' ? [] : reported.map((s) => `  reported set ${s.digest} epoch ${s.epoch} by ${s.nodes.join(', ')}`);
  return [head, ...rows, ...sets];
}
