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
 *             `release`: 1 the release operation failed (nothing written), 2 usage error.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import {
  asArgParser,
  ERROR_CODES,
  httpUrlArg,
  isErrorCode,
  NODE_ROLES,
  nonNegativeIntArg,
  positiveIntArg,
  pubkeyArg,
  sha256Arg,
  type NodeRole,
} from '@guts-upgrade/protocol';
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
import { EXIT, FINAL_BAD, renderPlan, renderRollout } from './cli-render.js';
import { watch, type WatchIo } from './cli-watch.js';
import { STRATEGIES } from './model.js';
import { ACTIONS, type OperatorAction } from './states.js';
import { missingHalf, unpairedReason } from './target.js';
import { ReleaseError } from './release/errors.js';
import { addReleaseCommands } from './release/cli.js';
import { PRODUCT_VERSION } from './version.js';

export { EXIT } from './cli-render.js';

export const DEFAULT_URL = 'http://127.0.0.1:7600';

export interface CliIo extends WatchIo {
  err(s: string): void;
}

interface GlobalOpts {
  url?: string;
  socket?: string;
  token?: string;
  cacert?: string;
  json?: boolean;
}

/** The followers, when there are any: outside n, f and the budget, so the first line does not count them. */
function followerLine(nodes: FleetBody['nodes']): string[] {
  const ids = nodes.filter((n) => n.role === 'follower').map((n) => n.id);
  return ids.length > 0 ? [`followers (outside the budget): ${ids.join(' ')}`] : [];
}

// ---- argument parsers: each throws InvalidArgumentError, which commander reports as a usage error.

const nonNegativeInt = asArgParser(nonNegativeIntArg, InvalidArgumentError);
const sha256Hex = asArgParser(sha256Arg, InvalidArgumentError);
const httpUrl = asArgParser(httpUrlArg, InvalidArgumentError);
const positiveInt = asArgParser(positiveIntArg, InvalidArgumentError);

/** A PEM CA file, read when the flag is parsed so a wrong path is a usage error before any request. */
function caFile(v: string): string {
  let pem: string;
  try {
    pem = readFileSync(v, 'utf8');
  } catch (err) {
    throw new InvalidArgumentError(`cannot read ${v}: ${(err as Error).message}`);
  }
  if (!pem.includes('BEGIN CERTIFICATE')) throw new InvalidArgumentError(`${v} holds no PEM certificate`);
  return pem;
}

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
  artifactUrl?: string;
  sha256?: string;
  signature?: string;
  artifactLength?: number;
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
    target: {
      version: f.to,
      // A bare version is the normal case: each agent resolves it through its signed release repository.
      ...(f.artifactUrl !== undefined ? { url: f.artifactUrl } : {}),
      ...(f.sha256 !== undefined ? { sha256: f.sha256 } : {}),
      ...(f.signature ? { signature: f.signature } : {}),
      ...(f.artifactLength !== undefined ? { length: f.artifactLength } : {}),
    },
    ...(f.strategy ? { strategy: f.strategy } : {}),
    ...(f.nodes ? { nodes: f.nodes } : {}),
    ...(Object.keys(options).length ? { options } : {}),
  };
}

/** --artifact-url and --sha256 come together (target.ts): one alone is a usage error, and nothing is sent. */
function artifactFlagsPaired(cmd: Command): void {
  const o = cmd.opts<RolloutFlags>();
  const missing = missingHalf({ url: o.artifactUrl, sha256: o.sha256 });
  // The code is the one the API would answer, so both refusals lead to the same entry in docs/errors.md.
  if (missing) {
    cmd.error(`error E_BAD_MESSAGE: ${unpairedReason(missing, { url: '--artifact-url', sha256: '--sha256' }, o.to)}`, {
      exitCode: EXIT.USAGE,
      code: 'guts.artifactFlagsUnpaired',
    });
  }
}

function withRolloutFlags(cmd: Command): Command {
  return cmd
    .requiredOption('--to <version>', 'the version to upgrade to (semver); each agent resolves it through its signed release repository')
    .option('--artifact-url <url>', 'where agents download the guts-node binary: only for agents with allowUnsigned: true; needs --sha256', httpUrl)
    .option('--sha256 <hex>', "the binary's sha256 (64 hex characters): only for agents with allowUnsigned: true; needs --artifact-url", sha256Hex)
    .option('--signature <base64>', "the release key's ed25519 signature over the binary's sha256 (agents with releasePublicKey check it)")
    .option('--artifact-length <bytes>', "the binary's size: agents stop its download there (default: each agent's fetch.maxBytes)", positiveInt)
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
    .option('--require-judged-soak', "fail the canary's soak when its metrics judged nothing (too few requests, no reference)")
    .hook('preAction', (_self, action) => artifactFlagsPaired(action));
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
    .option('--cacert <file>', "a private CA's PEM certificate to trust, besides the system's, for an https:// --url", caFile)
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
    if (g.cacert) t.ca = g.cacert;
    return { t, json: !!g.json };
  };
  const show = (json: boolean, v: unknown, text: () => string) => io.out(`${json ? JSON.stringify(v, null, 2) : text()}\n`);

  // nodes
  const nodes = program.command('nodes').description('list, register and revoke nodes (validators and followers)');
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
            .map((n) =>
              `${n.id.padEnd(16)} ${(n.role ?? 'validator').padEnd(9)} ${(n.version ?? '?').padEnd(10)} ${n.connected ? 'connected' : 'offline  '} ${n.healthy ? 'healthy  ' : 'unhealthy'} ${n.isLeader ? 'leader' : ''}`.trimEnd(),
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
    .addOption(
      new Option('--role <role>', 'validator, or follower: a full node outside the validator set, upgraded outside the safety budget')
        .choices([...NODE_ROLES])
        .default('validator'),
    )
    .action(async (id: string, o: { address?: string; pubkey?: string; role: NodeRole }, cmd: Command) => {
      const { t, json } = target(cmd);
      const r = await api<NodeRegisteredBody>(t, 'POST', '/api/v1/nodes', {
        id,
        ...(o.address ? { address: o.address } : {}),
        ...(o.pubkey ? { pubkey: o.pubkey } : {}),
        role: o.role,
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
          ...followerLine(r.nodes),
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
  addReleaseCommands(program, io, () => !!program.opts<GlobalOpts>().json);
  return program;
}

/** The release tool alone, without the CLI's --version or the coordinator's flags. */
function buildReleaseProgram(io: CliIo): Command {
  const program = new Command('guts-upgrade')
    .option('--json', 'print the outcome as JSON')
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .exitOverride();
  addReleaseCommands(program, io, () => !!program.opts<GlobalOpts>().json);
  return program;
}

/** The first word that is not a global flag or its value. */
function firstCommand(argv: string[]): string | undefined {
  const valued = new Set(['--url', '--socket', '--token', '--cacert']);
  let i = 0;
  while (i < argv.length && argv[i]!.startsWith('-')) i += valued.has(argv[i]!) ? 2 : 1;
  return argv[i];
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

export async function runCli(argv: string[], env: NodeJS.ProcessEnv, out: (s: string) => void, err: (s: string) => void, isTTY = false): Promise<number> {
  const io: CliIo = { env, out, err, isTTY };
  const result: { code: number } = { code: EXIT.OK };
  // `release add --version V` would meet the CLI's own --version, which commander
  // honours after any subcommand: the offline release tool parses on its own.
  const program = firstCommand(argv) === 'release' ? buildReleaseProgram(io) : buildProgram(io, result);
  if (argv.length === 0) {
    err(program.helpInformation());
    return EXIT.USAGE;
  }
  if (firstCommand(argv) !== 'release' && oldTargetFlag(argv)) {
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
    if (e instanceof ReleaseError) {
      err(`error ${e.message}\n`);
      return e.code === 'E_RELEASE_USAGE' ? EXIT.USAGE : EXIT.ROLLOUT_FAILED;
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
    !!process.stdout.isTTY,
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
