#!/usr/bin/env node
/**
 * guts-upgrade-agent: the daemon (`run`) and the operator commands on the host.
 *
 * Exit codes: 0 success; 1 failed, node unchanged (refused in preflight/fetch/backup);
 * 2 usage or configuration error; 3 upgrade failed and was rolled back (old version
 * healthy); 4 busy (another command runs); 5 rollback failed: the node needs an operator.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import cron from 'node-cron';
import { CodedError, errorCodeOf, PROTOCOL_VERSION, type Command, type Result } from '@guts-upgrade/protocol';
import { Agent, newCommandId } from './agent.js';
import { pauseHookFromEnv } from './pause-hook.js';
import { newBackupId } from './backup-store.js';
import { DEFAULT_CONFIG_PATH, loadConfig, type AgentConfig } from './config.js';
import { Connection } from './connection.js';
import { createLogger } from './log.js';
import { binaryVersion } from './steps/preflight.js';
import { isoNow } from './util.js';

export const EXIT = { OK: 0, FAILED: 1, USAGE: 2, ROLLED_BACK: 3, BUSY: 4, ROLLBACK_FAILED: 5 } as const;

const USAGE = `usage: guts-upgrade-agent <command> [--config PATH] [options]

  run                                   the daemon (connects to the coordinator)
  upgrade --to VERSION --url URL --sha256 HEX [--signature B64]
          [--allow-downgrade] [--approve-major] [--require-staged]
          [--reference-height N] [--sync-distance N] [--id ID] [--json]
  prepare --to VERSION --url URL --sha256 HEX [--signature B64]   fetch + verify + stage only
  rollback [--to VERSION] [--json]      undo the last committed upgrade from its backup
  backup create|list                    online backup / catalogue
  backup restore <id>                   stop the node, restore binary+config+data, start
  status [--json]                       node and agent status
  recover                               finish or roll back a command interrupted by a crash

  --config defaults to ${DEFAULT_CONFIG_PATH}; GUTS_UPGRADE_* env vars override it.
exit: 0 ok, 1 failed (node unchanged), 2 usage/config, 3 rolled back, 4 busy, 5 rollback failed`;

class UsageError extends Error {}

function parse(argv: string[]): { cmd: string[]; flags: Record<string, string | true> } {
  const flags: Record<string, string | true> = {};
  const cmd: string[] = [];
  const booleans = new Set(['allow-downgrade', 'approve-major', 'require-staged', 'json', 'help']);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith('--')) {
      const [k, v] = a.slice(2).split('=', 2) as [string, string | undefined];
      if (v !== undefined) flags[k] = v;
      else if (booleans.has(k)) flags[k] = true;
      else {
        const next = argv[++i];
        if (next === undefined) throw new UsageError(`--${k} needs a value`);
        flags[k] = next;
      }
    } else cmd.push(a);
  }
  return { cmd, flags };
}

function need(flags: Record<string, string | true>, k: string): string {
  const v = flags[k];
  if (typeof v !== 'string' || !v) throw new UsageError(`--${k} is required`);
  return v;
}

function intFlag(flags: Record<string, string | true>, k: string): number | undefined {
  const v = flags[k];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || !Number.isInteger(n) || n < 0) throw new UsageError(`--${k} must be a non-negative integer`);
  return n;
}

function exitFor(r: Result): number {
  if (r.outcome === 'succeeded') return EXIT.OK;
  if (r.outcome === 'rolled_back') return EXIT.ROLLED_BACK;
  if (r.code === 'E_ROLLBACK_FAILED') return EXIT.ROLLBACK_FAILED;
  return EXIT.FAILED;
}

function printResult(r: Result, json: boolean): void {
  if (json) {
    process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    return;
  }
  const head = r.outcome === 'succeeded'
    ? `${r.kind} ${r.commandId} succeeded: running ${r.runningVersion ?? '?'}`
    : `${r.kind} ${r.commandId} ${r.outcome}: ${r.code ?? ''} ${r.message ?? ''} (running ${r.runningVersion ?? '?'})`;
  process.stdout.write(head + '\n');
  for (const c of r.evidence?.checks ?? []) process.stdout.write(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}${c.detail ? `: ${c.detail.split('\n')[0]}` : ''}\n`);
  if (r.downtimeMs !== undefined) process.stdout.write(`  downtime ${r.downtimeMs} ms\n`);
}

async function runCommand(agent: Agent, command: Command, json: boolean): Promise<number> {
  agent.addListener({
    progress: (ev) => process.stderr.write(`[${ev.at}] ${ev.step.padEnd(9)} ${ev.state}${ev.message ? `: ${ev.message}` : ''}${ev.percent !== undefined ? ` (${ev.percent}%)` : ''}\n`),
  });
  const sub = await agent.submit(command);
  if (sub.ack === 'rejected') {
    process.stderr.write(`refused: ${sub.message}\n`);
    return sub.code === 'E_BUSY' ? EXIT.BUSY : sub.code === 'E_CONFIG' ? EXIT.USAGE : EXIT.FAILED;
  }
  const r = sub.ack === 'accepted' ? await sub.done : sub.result ?? (await sub.done!);
  printResult(r, json);
  return exitFor(r);
}

function targetCommand(kind: 'upgrade' | 'prepare', flags: Record<string, string | true>): Command {
  const referenceHeight = intFlag(flags, 'reference-height');
  const syncDistance = intFlag(flags, 'sync-distance');
  const options = {
    ...(flags['allow-downgrade'] ? { allowDowngrade: true } : {}),
    ...(flags['approve-major'] ? { approvedMajor: true } : {}),
    ...(flags['require-staged'] ? { requireStaged: true } : {}),
    ...(referenceHeight !== undefined ? { referenceHeight } : {}),
    ...(syncDistance !== undefined ? { syncDistance } : {}),
  };
  const sha = need(flags, 'sha256').toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(sha)) throw new UsageError('--sha256 must be 64 hex characters');
  const url = need(flags, 'url');
  if (!/^https?:\/\/\S+$/.test(url)) throw new UsageError('--url must be an http(s) URL');
  const sig = flags.signature;
  return {
    proto: PROTOCOL_VERSION, type: 'command', id: typeof flags.id === 'string' ? flags.id : newCommandId(`cli-${kind}`),
    kind, issuedAt: isoNow(),
    target: { version: need(flags, 'to'), url, sha256: sha, ...(typeof sig === 'string' ? { signature: sig } : {}) },
    options,
  } as Command;
}

async function daemon(agent: Agent, config: AgentConfig): Promise<number> {
  const log = agent.log;
  const recovered = await agent.recover();
  if (recovered) log.warn({ commandId: recovered.commandId, outcome: recovered.outcome, code: recovered.code }, 'recovered an interrupted command');
  let conn: Connection | null = null;
  if (config.coordinator.url) {
    if (!config.coordinator.token) throw new CodedError('E_CONFIG', 'config coordinator.token: is required with coordinator.url');
    conn = new Connection(agent, { url: config.coordinator.url, token: config.coordinator.token, nodeId: config.nodeId, reconnectMaxMs: config.coordinator.reconnectMaxMs }, log);
    void conn.run();
  } else log.warn('no coordinator.url configured: running without a coordinator');
  let task: { stop(): unknown } | null = null;
  if (config.backup.schedule) {
    if (!cron.validate(config.backup.schedule)) throw new CodedError('E_CONFIG', `config backup.schedule: invalid cron expression ${JSON.stringify(config.backup.schedule)}`);
    task = cron.schedule(config.backup.schedule, async () => {
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
    });
  }
  log.info({ nodeId: config.nodeId, driver: config.service.driver }, 'agent running');
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info({ signal: sig }, 'stopping; a running command is finished first');
      conn?.stop();
      task?.stop();
      void agent.idle().then(() => resolve());
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  return EXIT.OK;
}

export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parse(argv);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    return EXIT.USAGE;
  }
  const { cmd, flags } = parsed;
  if (flags.help || cmd.length === 0) {
    process.stdout.write(USAGE + '\n');
    return cmd.length === 0 && !flags.help ? EXIT.USAGE : EXIT.OK;
  }
  let config: AgentConfig;
  try {
    config = loadConfig(typeof flags.config === 'string' ? flags.config : DEFAULT_CONFIG_PATH);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    return EXIT.USAGE;
  }
  const isDaemon = cmd[0] === 'run';
  const log = createLogger(isDaemon ? config.logLevel : process.env.GUTS_UPGRADE_CLI_LOG_LEVEL ?? 'warn', !isDaemon);
  // The crash tests pause the agent at a step through the environment; see pause-hook.ts.
  const agent = new Agent(config, log, { afterJournal: pauseHookFromEnv(process.env) });
  const json = flags.json === true;
  try {
    switch (cmd[0]) {
      case 'run':
        return await daemon(agent, config);
      case 'upgrade':
      case 'prepare': {
        const command = targetCommand(cmd[0], flags);
        return await runCommand(agent, command, json);
      }
      case 'rollback': {
        const to = flags.to;
        const command: Command = {
          proto: PROTOCOL_VERSION, type: 'command', kind: 'rollback', id: typeof flags.id === 'string' ? flags.id : newCommandId('cli-rollback'),
          issuedAt: isoNow(), ...(typeof to === 'string' ? { toVersion: to } : {}),
        };
        return await runCommand(agent, command, json);
      }
      case 'recover': {
        const r = await agent.recover();
        if (!r) {
          const holder = agent.journal.lockHolder();
          process.stdout.write(holder?.alive ? `command ${holder.commandId} is running in pid ${holder.pid}; nothing to recover\n` : 'nothing to recover\n');
          return EXIT.OK;
        }
        printResult(r, json);
        return exitFor(r);
      }
      case 'status': {
        const s = await agent.status();
        const holder = agent.journal.lockHolder();
        const out = { nodeId: config.nodeId, status: s, lock: holder, recentResults: agent.journal.recentResults(5) };
        if (json) process.stdout.write(JSON.stringify(out, null, 2) + '\n');
        else {
          process.stdout.write(`node ${config.nodeId}: version ${s.nodeVersion ?? '?'} health ${s.health} ready ${s.ready} height ${s.finalizedHeight ?? '?'} peers ${s.peerCount ?? '?'} leader ${s.isLeader}\n`);
          process.stdout.write(holder ? `busy: ${holder.commandId} (pid ${holder.pid}${holder.alive ? '' : ', dead: run `recover`'})\n` : 'idle\n');
          for (const r of out.recentResults) process.stdout.write(`  ${r.finishedAt} ${r.kind} ${r.commandId} ${r.outcome}${r.code ? ` ${r.code}` : ''} ${r.fromVersion ?? '?'} -> ${r.toVersion ?? '?'}\n`);
        }
        return EXIT.OK;
      }
      case 'backup':
        return await backupCmd(agent, config, cmd.slice(1), json);
      default:
        process.stderr.write(`unknown command ${cmd[0]}\n${USAGE}\n`);
        return EXIT.USAGE;
    }
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${err.message}\n${USAGE}\n`);
      return EXIT.USAGE;
    }
    const code = errorCodeOf(err);
    process.stderr.write(`${(err as Error).message}\n`);
    return code === 'E_BUSY' ? EXIT.BUSY : code === 'E_CONFIG' ? EXIT.USAGE : EXIT.FAILED;
  } finally {
    agent.close();
  }
}

async function backupCmd(agent: Agent, config: AgentConfig, args: string[], json: boolean): Promise<number> {
  const sub = args[0];
  if (sub === 'list') {
    const rows = agent.backups.list();
    if (json) process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
    else for (const b of rows) {
      const size = [b.meta.binary, b.meta.config, b.meta.dataBase, b.meta.dataDelta].reduce((a, e) => a + (e?.size ?? 0), 0);
      process.stdout.write(`${b.id}  ${b.createdAt}  ${b.status.padEnd(8)}  version ${b.version ?? '?'}  ${size} bytes${b.commandId ? `  (upgrade ${b.commandId})` : ''}\n`);
    }
    return EXIT.OK;
  }
  if (sub === 'create') {
    const id = newBackupId();
    agent.journal.acquire(`backup:${id}`);
    try {
      process.stderr.write(`creating online backup ${id} of ${config.node.dataDir}\n`);
      const v = (await binaryVersion(config.node.binary)).version;
      const row = await agent.backups.createOnline(id, v);
      process.stdout.write(json ? JSON.stringify(row, null, 2) + '\n' : `backup ${row.id} complete in ${agent.backups.dirOf(row.id)}\n`);
      return EXIT.OK;
    } catch (err) {
      agent.backups.discard(id);
      throw err;
    } finally {
      agent.journal.release(`backup:${id}`);
    }
  }
  if (sub === 'restore') {
    const id = args[1];
    if (!id) throw new UsageError('backup restore needs a backup id (see `backup list`)');
    await agent.backups.verify(id);
    const op = `restore:${id}`;
    agent.journal.acquire(op);
    try {
      process.stderr.write(`stopping ${config.service.name}\n`);
      await agent.driver.stop();
      process.stderr.write(`restoring binary, config and data from ${id}\n`);
      await agent.backups.restoreBinary(id);
      await agent.backups.restoreConfig(id);
      await agent.backups.restoreData(id);
      process.stderr.write('starting the node\n');
      await agent.driver.start();
      const deadline = Date.now() + config.checks.readyTimeoutMs;
      while (!(await agent.node.ready())) {
        if (Date.now() > deadline) throw new CodedError('E_HEALTH_TIMEOUT', `the node was not ready ${config.checks.readyTimeoutMs} ms after the restore`);
        await new Promise((r) => setTimeout(r, 200));
      }
      process.stdout.write(`restored ${id}; node ready on ${(await agent.node.runningVersion()) ?? '?'}\n`);
      return EXIT.OK;
    } finally {
      agent.journal.release(op);
    }
  }
  throw new UsageError('backup needs create, list or restore <id>');
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
