#!/usr/bin/env node
/**
 * guts-upgrade-agent: the daemon (`run`) and the operator commands on the host;
 * `guts-upgrade-agent help COMMAND` lists each one's flags.
 *
 * Exit codes: 0 success; 1 failed, node unchanged (refused in preflight/fetch/backup);
 * 2 usage or configuration error; 3 upgrade failed and was rolled back (old version
 * healthy); 4 busy (another command runs); 5 rollback failed: the node needs an operator.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command as CliCommand, CommanderError, InvalidArgumentError } from 'commander';
import cron from 'node-cron';
import {
  asArgParser,
  CodedError,
  errorCodeOf,
  httpUrlArg,
  nonNegativeIntArg,
  positiveIntArg,
  PROTOCOL_VERSION,
  sha256Arg,
  type Command,
  type Result,
} from '@guts-upgrade/protocol';
import { Agent, newCommandId } from './agent.js';
import { pauseHookFromEnv } from './pause-hook.js';
import { newBackupId } from './backup-store.js';
import { cleartextToRemote, DEFAULT_CONFIG_PATH, loadConfig, type AgentConfig } from './config.js';
import { Connection } from './connection.js';
import { checkTextfileDir, TextfileWriter } from './metrics-textfile.js';
import { renderFindings, runDoctor } from './doctor.js';
import { restoreBackup } from './restore.js';
import { createLogger } from './log.js';
import { binaryVersion } from './steps/preflight.js';
import { isoNow } from './util.js';
import { PRODUCT_VERSION } from './version.js';

export const EXIT = { OK: 0, FAILED: 1, USAGE: 2, ROLLED_BACK: 3, BUSY: 4, ROLLBACK_FAILED: 5 } as const;

/** The flags every command takes; `--config` is read only by the commands that need it, so `--help` works without one. */
interface CommonOpts {
  config: string;
  json?: boolean;
}

// Commander reports an InvalidArgumentError as a usage error naming the flag.
const nonNegativeInt = asArgParser(nonNegativeIntArg, InvalidArgumentError);
const sha256Hex = asArgParser(sha256Arg, InvalidArgumentError);
const httpUrl = asArgParser(httpUrlArg, InvalidArgumentError);
const positiveInt = asArgParser(positiveIntArg, InvalidArgumentError);

interface TargetOpts extends CommonOpts {
  to: string;
  url?: string;
  sha256?: string;
  signature?: string;
  length?: number;
  allowDowngrade?: boolean;
  approveMajor?: boolean;
  requireStaged?: boolean;
  referenceHeight?: number;
  syncDistance?: number;
  id?: string;
}

function exitFor(r: Result): number {
  if (r.outcome === 'succeeded') return EXIT.OK;
  if (r.outcome === 'rolled_back') return EXIT.ROLLED_BACK;
  if (r.code === 'E_ROLLBACK_FAILED') return EXIT.ROLLBACK_FAILED;
  return EXIT.FAILED;
}

function printResult(r: Result, json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
    return;
  }
  const head =
    r.outcome === 'succeeded'
      ? `${r.kind} ${r.commandId} succeeded: running ${r.runningVersion ?? '?'}`
      : `${r.kind} ${r.commandId} ${r.outcome}: ${r.code ?? ''} ${r.message ?? ''} (running ${r.runningVersion ?? '?'})`;
  process.stdout.write(`${head}\n`);
  for (const c of r.evidence?.checks ?? []) process.stdout.write(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}${c.detail ? `: ${c.detail.split('\n')[0]}` : ''}\n`);
  if (r.downtimeMs !== undefined) process.stdout.write(`  downtime ${r.downtimeMs} ms\n`);
}

async function runCommand(agent: Agent, command: Command, json: boolean): Promise<number> {
  agent.addListener({
    progress: (ev) =>
      process.stderr.write(
        `[${ev.at}] ${ev.step.padEnd(9)} ${ev.state}${ev.message ? `: ${ev.message}` : ''}${ev.percent !== undefined ? ` (${ev.percent}%)` : ''}\n`,
      ),
  });
  const sub = await agent.submit(command);
  if (sub.ack === 'rejected') {
    process.stderr.write(`refused: ${sub.message}\n`);
    return sub.code === 'E_BUSY' ? EXIT.BUSY : sub.code === 'E_CONFIG' ? EXIT.USAGE : EXIT.FAILED;
  }
  const r = sub.ack === 'accepted' ? await sub.done : (sub.result ?? (await sub.done!));
  printResult(r, json);
  return exitFor(r);
}

/** A target command, unless it lacks what this configuration needs to fetch it (a usage error). */
function runTarget(agent: Agent, config: AgentConfig, command: Command, json: boolean): Promise<number> {
  if (command.kind !== 'rollback' && config.release.repository === null && config.allowUnsigned && (!command.target.url || !command.target.sha256)) {
    process.stderr.write('error: --url and --sha256 are required without a release repository (config release.repository)\n');
    return Promise.resolve(EXIT.USAGE);
  }
  return runCommand(agent, command, json);
}

function targetCommand(kind: 'upgrade' | 'prepare', o: TargetOpts): Command {
  const options = {
    ...(o.requireStaged ? { requireStaged: true } : {}),
    ...(o.referenceHeight !== undefined ? { referenceHeight: o.referenceHeight } : {}),
    ...(o.syncDistance !== undefined ? { syncDistance: o.syncDistance } : {}),
  };
  return {
    proto: PROTOCOL_VERSION,
    type: 'command',
    id: o.id ?? newCommandId(`cli-${kind}`),
    kind,
    issuedAt: isoNow(),
    target: {
      version: o.to,
      ...(o.url ? { url: o.url } : {}),
      ...(o.sha256 ? { sha256: o.sha256 } : {}),
      ...(o.signature ? { signature: o.signature } : {}),
      ...(o.length !== undefined ? { length: o.length } : {}),
    },
    options,
  } as Command;
}

function withTargetFlags(cmd: CliCommand): CliCommand {
  return (
    cmd
      .requiredOption('--to <version>', 'the version to install (semver)')
      // Both required unless config release.repository is set: the agent then resolves the version itself.
      .option('--url <url>', 'where to download the guts-node binary (ignored with config release.repository)', httpUrl)
      .option('--sha256 <hex>', "the binary's sha256 (with config release.repository: must match the signed release)", sha256Hex)
      .option('--signature <base64>', "the release key's signature over the sha256")
      .option('--length <bytes>', "the binary's size: the download stops there (default: config fetch.maxBytes)", positiveInt)
      .option('--id <id>', 'command id (default: generated)')
  );
}

/** What `run` needs beyond a loadable configuration; `config validate` checks the same. */
function checkDaemonConfig(config: AgentConfig): void {
  if (config.coordinator.url && !config.coordinator.token)
    throw new CodedError('E_CONFIG', 'config coordinator.token: is required with coordinator.url (or coordinator.tokenFile)');
  if (config.metrics.textfile) checkTextfileDir(config.metrics.textfile);
}

async function daemon(agent: Agent, config: AgentConfig): Promise<number> {
  checkDaemonConfig(config);
  const log = agent.log;
  const recovered = await agent.recover();
  if (recovered) log.warn({ commandId: recovered.commandId, outcome: recovered.outcome, code: recovered.code }, 'recovered an interrupted command');
  let conn: Connection | null = null;
  if (config.coordinator.url && config.coordinator.token) {
    conn = new Connection(
      agent,
      {
        url: config.coordinator.url,
        token: config.coordinator.token,
        nodeId: config.nodeId,
        validatorPubkey: config.validatorPubkey,
        role: config.role,
        reconnectMaxMs: config.coordinator.reconnectMaxMs,
        ca: config.coordinator.ca,
      },
      log,
    );
    if (cleartextToRemote(config.coordinator.url)) {
      log.warn(
        { url: config.coordinator.url },
        'coordinator.allowInsecure: the token and every command cross the network in clear (ws://); use wss:// with coordinator.caFile',
      );
    }
    void conn.run();
  } else log.warn('no coordinator.url configured: running without a coordinator');
  let task: { stop(): unknown } | null = null;
  if (config.backup.schedule) {
    // In UTC, as the coordinator's maintenance windows: one reading of a cron line for the fleet.
    task = cron.schedule(
      config.backup.schedule,
      async () => {
        const id = newBackupId();
        try {
          agent.journal.acquire(`backup:${id}`);
        } catch (err) {
          log.info({ err: (err as Error).message }, 'scheduled backup skipped: busy');
          return;
        }
        try {
          const v = (await binaryVersion(config.node.binary)).version;
          await agent.backups.createOnline(id, v);
          log.info({ backupId: id }, 'scheduled backup done');
        } catch (err) {
          log.error({ err: (err as Error).message }, 'scheduled backup failed');
        } finally {
          agent.journal.release(`backup:${id}`);
        }
      },
      { timezone: 'UTC' },
    );
  }
  const textfile = config.metrics.textfile ? new TextfileWriter(agent, config.metrics.textfile, config.metrics.intervalMs) : null;
  await textfile?.start();
  log.info({ nodeId: config.nodeId, driver: config.service.driver, metricsTextfile: config.metrics.textfile }, 'agent running');
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info({ signal: sig }, 'stopping; a running command is finished first');
      conn?.stop();
      task?.stop();
      // The last result is in the file before the process goes.
      void agent
        .idle()
        .then(() => textfile?.write())
        .then(() => {
          textfile?.stop();
          resolve();
        });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  return EXIT.OK;
}

/**
 * The host's operator may widen this run's local policy from the command line
 * (`--allow-downgrade`, `--approve-major`): the same keys as the configuration,
 * never a field of the command, which the coordinator could set as well.
 */
type LocalPolicy = Partial<Pick<AgentConfig['release'], 'allowDowngrade' | 'allowMajor'>>;

/** Loads the configuration (widened by `policy`) and an Agent, runs `fn`, and closes the agent's journal whatever happens. */
async function withAgent(
  o: CommonOpts,
  daemonLog: boolean,
  fn: (agent: Agent, config: AgentConfig) => Promise<number>,
  policy: LocalPolicy = {},
): Promise<number> {
  const loaded = loadConfig(o.config);
  const config = { ...loaded, release: { ...loaded.release, ...policy } };
  const log = createLogger(daemonLog ? config.logLevel : (process.env.GUTS_UPGRADE_CLI_LOG_LEVEL ?? 'warn'), !daemonLog);
  // The crash tests pause the agent at a step through the environment; see pause-hook.ts.
  const agent = new Agent(config, log, { afterJournal: pauseHookFromEnv(process.env) });
  try {
    return await fn(agent, config);
  } finally {
    agent.close();
  }
}

function statusCmd(agent: Agent, config: AgentConfig, json: boolean): Promise<number> {
  return agent.status().then((s) => {
    const holder = agent.journal.lockHolder();
    const out = { nodeId: config.nodeId, role: config.role, status: s, lock: holder, recentResults: agent.journal.recentResults(5) };
    if (json) process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    else {
      process.stdout.write(
        `node ${config.nodeId} (${config.role}): version ${s.nodeVersion ?? '?'} health ${s.health} ready ${s.ready} height ${s.finalizedHeight ?? '?'} peers ${s.peerCount ?? '?'} leader ${s.isLeader}\n`,
      );
      process.stdout.write(holder ? `busy: ${holder.commandId} (pid ${holder.pid}${holder.alive ? '' : ', dead: run `recover`'})\n` : 'idle\n');
      for (const r of out.recentResults)
        process.stdout.write(
          `  ${r.finishedAt} ${r.kind} ${r.commandId} ${r.outcome}${r.code ? ` ${r.code}` : ''} ${r.fromVersion ?? '?'} -> ${r.toVersion ?? '?'}\n`,
        );
    }
    return EXIT.OK;
  });
}

export function buildProgram(result: { code: number }): CliCommand {
  const program = new CliCommand('guts-upgrade-agent')
    .description('The guts-upgrade agent: upgrades, backs up and rolls back the guts-node on this host.')
    .version(PRODUCT_VERSION, '-V, --version', 'print the guts-upgrade version')
    .option(
      '--config <path>',
      `the agent configuration (env GUTS_UPGRADE_AGENT_CONFIG; default ${DEFAULT_CONFIG_PATH}); GUTS_UPGRADE_* env vars override its keys`,
      process.env.GUTS_UPGRADE_AGENT_CONFIG ?? DEFAULT_CONFIG_PATH,
    )
    .option('--json', 'print results as JSON')
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText('after', '\nExit codes: 0 ok, 1 failed (node unchanged), 2 usage/config, 3 rolled back, 4 busy, 5 rollback failed')
    .exitOverride();
  const opts = <T>(cmd: CliCommand) => cmd.optsWithGlobals<T & CommonOpts>();
  const set = (p: Promise<number>) =>
    p.then((c) => {
      result.code = c;
    });

  program
    .command('run')
    .description('the daemon: connects to the coordinator and runs its commands')
    .action((_o, cmd: CliCommand) => set(withAgent(opts(cmd), true, daemon)));
  withTargetFlags(
    program.command('upgrade').description('the whole upgrade: fetch, verify, back up, stop, swap, migrate, start, verify; rolls back on failure'),
  )
    .option('--allow-downgrade', 'allow a version older than the running one (this run only: release.allowDowngrade)')
    .option('--approve-major', 'allow a major version change without a release repository (this run only: release.allowMajor)')
    .option('--require-staged', 'refuse unless `prepare` staged this artifact already')
    .option('--reference-height <n>', 'the network height the node must reach to count as synced', nonNegativeInt)
    .option('--sync-distance <n>', 'blocks behind the reference that still count as synced', nonNegativeInt)
    .action((_o, cmd: CliCommand) => {
      const o = opts<TargetOpts>(cmd);
      const policy = { ...(o.allowDowngrade ? { allowDowngrade: true } : {}), ...(o.approveMajor ? { allowMajor: true } : {}) };
      return set(withAgent(o, false, (agent, config) => runTarget(agent, config, targetCommand('upgrade', o), !!o.json), policy));
    });
  withTargetFlags(program.command('prepare').description('fetch, verify and stage an artifact only; the node keeps running')).action((_o, cmd: CliCommand) => {
    const o = opts<TargetOpts>(cmd);
    return set(withAgent(o, false, (agent, config) => runTarget(agent, config, targetCommand('prepare', o), !!o.json)));
  });
  program
    .command('rollback')
    .description('undo the last committed upgrade from its backup')
    .option('--to <version>', 'the version to return to (default: the one before the last upgrade)')
    .option('--id <id>', 'command id (default: generated)')
    .action((_o, cmd: CliCommand) => {
      const o = opts<{ to?: string; id?: string }>(cmd);
      const command: Command = {
        proto: PROTOCOL_VERSION,
        type: 'command',
        kind: 'rollback',
        id: o.id ?? newCommandId('cli-rollback'),
        issuedAt: isoNow(),
        ...(o.to ? { toVersion: o.to } : {}),
      };
      return set(withAgent(o, false, (agent) => runCommand(agent, command, !!o.json)));
    });
  program
    .command('status')
    .description('node and agent status, and the last results')
    .action((_o, cmd: CliCommand) => {
      const o = opts<object>(cmd);
      return set(withAgent(o, false, (agent, config) => statusCmd(agent, config, !!o.json)));
    });
  program
    .command('doctor')
    .description("the procedure's troubleshooting checks on this host, each finding with the next command to run (exit 1 if any fails)")
    .action((_o, cmd: CliCommand) => {
      const o = opts<object>(cmd);
      return set(
        withAgent(o, false, async (agent, config) => {
          const findings = await runDoctor({ config, driver: agent.driver, node: agent.node, journal: agent.journal, backups: agent.backups });
          process.stdout.write(`${o.json ? JSON.stringify({ nodeId: config.nodeId, findings }, null, 2) : renderFindings(findings)}\n`);
          return findings.some((f) => f.verdict === 'fail') ? EXIT.FAILED : EXIT.OK;
        }),
      );
    });
  program
    .command('recover')
    .description('finish or roll back a command interrupted by a crash')
    .action((_o, cmd: CliCommand) => {
      const o = opts<object>(cmd);
      return set(
        withAgent(o, false, async (agent) => {
          const r = await agent.recover();
          if (!r) {
            const holder = agent.journal.lockHolder();
            process.stdout.write(holder?.alive ? `command ${holder.commandId} is running in pid ${holder.pid}; nothing to recover\n` : 'nothing to recover\n');
            return EXIT.OK;
          }
          printResult(r, !!o.json);
          return exitFor(r);
        }),
      );
    });
  const backup = program.command('backup').description('online backups of binary, config and data');
  backup
    .command('create')
    .description('an online backup while the node runs')
    .action((_o, cmd: CliCommand) => {
      const o = opts<object>(cmd);
      return set(withAgent(o, false, (agent, config) => backupCreate(agent, config, !!o.json)));
    });
  backup
    .command('list')
    .description('the backup catalogue')
    .action((_o, cmd: CliCommand) => {
      const o = opts<object>(cmd);
      return set(withAgent(o, false, async (agent) => backupList(agent, !!o.json)));
    });
  backup
    .command('restore')
    .description('stop the node, restore binary, config and data from a backup, start it')
    .argument('<id>', 'the backup id (see `backup list`)')
    .action((id: string, _o, cmd: CliCommand) => {
      const o = opts<object>(cmd);
      return set(withAgent(o, false, (agent, config) => backupRestore(agent, config, id)));
    });
  program
    .command('config')
    .description('check the configuration')
    .command('validate')
    .description('load and check the configuration as `run` would; exit 0 if valid, 2 if not')
    .action((_o, cmd: CliCommand) => {
      const c = loadConfig(opts<object>(cmd).config);
      checkDaemonConfig(c);
      process.stdout.write(
        `configuration valid: node ${c.nodeId}, ${c.role}${c.validatorPubkey ? ` (key ${c.validatorPubkey.slice(0, 16)}…)` : ''}, ${c.service.driver} driver (${c.service.name}), state ${c.stateDir}, ` +
          `${c.coordinator.url ? `coordinator ${c.coordinator.url}` : 'no coordinator'}\n`,
      );
    });
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const result = { code: EXIT.OK as number };
  const program = buildProgram(result);
  if (argv.length === 0) {
    process.stderr.write(program.helpInformation());
    return EXIT.USAGE;
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
    return result.code;
  } catch (err) {
    // Commander's own: --help, -h, `help` and --version (exit code 0), or a usage error.
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
    const code = errorCodeOf(err);
    process.stderr.write(`${(err as Error).message}\n`);
    return code === 'E_BUSY' ? EXIT.BUSY : code === 'E_CONFIG' ? EXIT.USAGE : EXIT.FAILED;
  }
}

async function backupList(agent: Agent, json: boolean): Promise<number> {
  const rows = agent.backups.list();
  if (json) process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
  else
    for (const b of rows) {
      const size = [b.meta.binary, b.meta.config, b.meta.dataBase, b.meta.dataDelta].reduce((a, e) => a + (e?.size ?? 0), 0);
      process.stdout.write(
        `${b.id}  ${b.createdAt}  ${b.status.padEnd(8)}  version ${b.version ?? '?'}  ${size} bytes${b.commandId ? `  (upgrade ${b.commandId})` : ''}\n`,
      );
    }
  return EXIT.OK;
}

async function backupCreate(agent: Agent, config: AgentConfig, json: boolean): Promise<number> {
  const id = newBackupId();
  agent.journal.acquire(`backup:${id}`);
  try {
    process.stderr.write(`creating online backup ${id} of ${config.node.dataDir}\n`);
    const v = (await binaryVersion(config.node.binary)).version;
    const row = await agent.backups.createOnline(id, v);
    process.stdout.write(json ? `${JSON.stringify(row, null, 2)}\n` : `backup ${row.id} complete in ${agent.backups.dirOf(row.id)}\n`);
    return EXIT.OK;
  } catch (err) {
    agent.backups.discard(id);
    throw err;
  } finally {
    agent.journal.release(`backup:${id}`);
  }
}

async function backupRestore(agent: Agent, config: AgentConfig, id: string): Promise<number> {
  const op = `restore:${id}`;
  agent.journal.acquire(op);
  try {
    const say = (line: string) => process.stderr.write(`${line}\n`);
    const version = await restoreBackup({ config, driver: agent.driver, node: agent.node, backups: agent.backups, say }, id);
    process.stdout.write(`restored ${id}; node ready on ${version ?? '?'}\n`);
    return EXIT.OK;
  } finally {
    agent.journal.release(op);
  }
}

// Compared through realpath: started via a symlink (an npm bin link, /opt/guts-upgrade
// pointing at a release dir) argv[1] is the link while import.meta.url is resolved.
const isMain = process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`internal error: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(EXIT.FAILED);
    },
  );
}
