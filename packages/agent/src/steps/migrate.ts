import { CodedError } from '@guts-upgrade/protocol';
import { fillArgv } from '../config.js';
import { runArgv, tailLines, type RunResult } from '../util.js';
import { asUser } from '../run-as.js';
import { addCheck, type StepContext } from './context.js';

export function placeholders(ctx: StepContext): Record<string, string> {
  const c = ctx.config;
  return {
    from: ctx.data.fromVersion ?? '',
    to: ctx.data.toVersion ?? '',
    dataDir: c.node.dataDir,
    binary: c.node.binary,
    config: c.node.config,
  };
}

/** On a container host the commands run in a one-shot container of the release image, so paths are the container's. */
async function commandPlaceholders(ctx: StepContext): Promise<Record<string, string>> {
  const images = ctx.driver.images;
  if (!images) return placeholders(ctx);
  const c = ctx.config;
  return {
    ...placeholders(ctx),
    binary: c.service.imageBinary,
    dataDir: await images.containerPath(c.node.dataDir),
    config: await images.containerPath(c.node.config),
  };
}

/** As the node's user: the files a migration writes are the node's to read, and the new binary gets no root. */
async function runCommand(ctx: StepContext, argv: string[]): Promise<RunResult> {
  const timeoutMs = ctx.config.checks.commandTimeoutMs;
  const images = ctx.driver.images;
  // In a container: the node container's user and mounts, the release image, no network.
  if (images) return images.run(ctx.data.newImage!, argv, timeoutMs);
  return runArgv(argv, { timeoutMs, ...asUser((await ctx.identities()).node) });
}

/**
 * none: nothing. automatic: the node migrates its schema on start; the start
 * step watches for it. manual: run the operator's configured migration argv,
 * then the verify argv, capturing output as evidence.
 */
export async function migrate(ctx: StepContext): Promise<'none' | 'automatic' | 'manual'> {
  const kind = ctx.data.path?.migration ?? 'none';
  if (kind === 'none') return kind;
  // From here the data dir may change: a rollback must restore it.
  ctx.save({ migrationRan: true });
  if (kind === 'automatic') {
    ctx.progress('migrate', 'running', 'automatic: the node migrates its storage schema on start');
    return kind;
  }
  const c = ctx.config;
  const values = await commandPlaceholders(ctx);
  const argv = fillArgv(c.commands.migrate!, values);
  ctx.progress('migrate', 'running', `running ${JSON.stringify(argv)}`);
  const r = await runCommand(ctx, argv);
  const out = tailLines(`${r.stdout}\n${r.stderr}`, 20).join('\n');
  addCheck(ctx, 'migration-command', r.code === 0, `exit ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''}: ${out}`);
  if (r.code !== 0) throw new CodedError('E_MIGRATION', `migration command exited ${r.code ?? r.signal}${r.timedOut ? ' (timeout)' : ''}: ${out.slice(-1000)}`);
  if (c.commands.verify) {
    const vargv = fillArgv(c.commands.verify, values);
    ctx.progress('migrate', 'running', `verifying with ${JSON.stringify(vargv)}`);
    const v = await runCommand(ctx, vargv);
    const vout = tailLines(`${v.stdout}\n${v.stderr}`, 20).join('\n');
    addCheck(ctx, 'migration-verify', v.code === 0, `exit ${v.code ?? v.signal}: ${vout}`);
    if (v.code !== 0) throw new CodedError('E_MIGRATION', `migration verify command exited ${v.code ?? v.signal}: ${vout.slice(-1000)}`);
  }
  return kind;
}
