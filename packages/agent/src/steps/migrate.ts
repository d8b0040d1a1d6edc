import { CodedError } from '@guts-upgrade/protocol';
import { fillArgv } from '../config.js';
import { runArgv, tailLines } from '../util.js';
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
  const argv = fillArgv(c.commands.migrate!, placeholders(ctx));
  ctx.progress('migrate', 'running', `running ${JSON.stringify(argv)}`);
  // As the node's user: the files a migration writes are the node's to read, and the new binary gets no root.
  const who = asUser((await ctx.identities()).node);
  const r = await runArgv(argv, { timeoutMs: c.checks.commandTimeoutMs, ...who });
  const out = tailLines(`${r.stdout}\n${r.stderr}`, 20).join('\n');
  addCheck(ctx, 'migration-command', r.code === 0, `exit ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''}: ${out}`);
  if (r.code !== 0) throw new CodedError('E_MIGRATION', `migration command exited ${r.code ?? r.signal}${r.timedOut ? ' (timeout)' : ''}: ${out.slice(-1000)}`);
  if (c.commands.verify) {
    const vargv = fillArgv(c.commands.verify, placeholders(ctx));
    ctx.progress('migrate', 'running', `verifying with ${JSON.stringify(vargv)}`);
    const v = await runArgv(vargv, { timeoutMs: c.checks.commandTimeoutMs, ...who });
    const vout = tailLines(`${v.stdout}\n${v.stderr}`, 20).join('\n');
    addCheck(ctx, 'migration-verify', v.code === 0, `exit ${v.code ?? v.signal}: ${vout}`);
    if (v.code !== 0) throw new CodedError('E_MIGRATION', `migration verify command exited ${v.code ?? v.signal}: ${vout.slice(-1000)}`);
  }
  return kind;
}
