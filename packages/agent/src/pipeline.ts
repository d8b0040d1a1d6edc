/**
 * The single-node upgrade, top to bottom. Each step is journaled before it
 * runs (see state.ts for what a crash in each state means), reports progress,
 * and on failure after the node was touched rolls back automatically.
 *
 *   preflight -> fetch -> backup            (node untouched; failure = failed)
 *   stop -> install -> migrate -> start -> verify   (failure = rollback)
 *   commit
 */
import fs from 'node:fs';
import { CodedError, errorCodeOf, type CheckResult, type Result, type StepName } from '@guts-upgrade/protocol';
import type { State } from './state.js';
import { backup } from './steps/backup.js';
import type { StepContext } from './steps/context.js';
import { fetchArtifact } from './steps/fetch.js';
import { install } from './steps/install.js';
import { migrate } from './steps/migrate.js';
import { preflight } from './steps/preflight.js';
import { rollbackToOld } from './steps/rollback.js';
import { start } from './steps/start.js';
import { stop } from './steps/stop.js';
import { verify } from './steps/verify.js';
import { isoNow, sleep } from './util.js';

/**
 * Test hook: GUTS_UPGRADE_TEST_PAUSE_AT=<step> makes the agent write
 * GUTS_UPGRADE_TEST_PAUSE_FILE and hang right after journaling that step, so a
 * test can kill -9 it at a precise moment. Inert unless both are set.
 */
async function testPause(step: string): Promise<void> {
  const at = process.env.GUTS_UPGRADE_TEST_PAUSE_AT;
  const marker = process.env.GUTS_UPGRADE_TEST_PAUSE_FILE;
  if (!at || !marker || at !== step) return;
  fs.writeFileSync(marker, `${process.pid} ${step}\n`);
  for (;;) await sleep(1000);
}

export async function enter(ctx: StepContext, state: State & StepName): Promise<void> {
  ctx.journal.transition(ctx.command.id, state);
  ctx.progress(state, 'started');
  await testPause(state);
}

export interface Outcome {
  outcome: Result['outcome'];
  code?: Result['code'];
  message?: string;
  rollback?: Result['rollback'];
}

/** Builds the wire result from what the context recorded. */
export async function buildResult(ctx: StepContext, o: Outcome, startedAt: string): Promise<Result> {
  const d = ctx.data;
  const failed = o.outcome !== 'succeeded';
  const tail = failed ? await ctx.driver.logTail(30).catch(() => []) : [];
  const transitions = ctx.journal.transitions(ctx.command.id).map((t) => `${t.at} ${t.from ?? '-'} -> ${t.to}${t.detail ? ` (${t.detail})` : ''}`);
  const checks: CheckResult[] = ctx.checks.slice(-64);
  const running = await ctx.node.runningVersion();
  const r: Result = {
    proto: '1.0',
    type: 'result',
    commandId: ctx.command.id,
    kind: ctx.command.kind,
    outcome: o.outcome,
    fromVersion: d.fromVersion ?? null,
    toVersion: d.toVersion ?? null,
    runningVersion: running,
    ...(o.code ? { code: o.code } : {}),
    ...(o.message ? { message: o.message.slice(0, 4000) } : {}),
    ...(d.path ? { migration: d.path.migration } : {}),
    ...(d.stoppedAt && d.readyAt ? { downtimeMs: Math.max(0, d.readyAt - d.stoppedAt) } : {}),
    ...(o.rollback ? { rollback: o.rollback } : {}),
    evidence: { checks, journalTail: [...transitions, ...tail].slice(-200).map((l) => l.slice(0, 4000)) },
    startedAt,
    finishedAt: isoNow(),
  };
  return r;
}

/** Rolls back after a failure at or after stop; the result carries the original failure's code. */
export async function rollbackAfter(ctx: StepContext, err: unknown, startedAt: string, interrupted = false): Promise<Result> {
  const code = interrupted ? 'E_INTERRUPTED' : errorCodeOf(err);
  const message = interrupted ? `the agent was interrupted in state ${String(err)}; rolled back on restart` : (err as Error).message;
  ctx.save({ failure: { code, message, step: ctx.journal.get(ctx.command.id)?.state ?? '?' } });
  ctx.journal.transition(ctx.command.id, 'rollback', `${code}: ${message}`.slice(0, 1000));
  ctx.progress('rollback', 'started', message);
  await testPause('rollback');
  const rb = await rollbackToOld(ctx);
  if (rb.ok) {
    ctx.journal.transition(ctx.command.id, 'rolled_back');
    ctx.progress('rollback', 'done', `back on ${ctx.data.fromVersion} (${rb.mode})`);
    return buildResult(ctx, { outcome: 'rolled_back', code, message, rollback: { mode: rb.mode, ok: true } }, startedAt);
  }
  ctx.journal.transition(ctx.command.id, 'failed', 'rollback failed');
  ctx.progress('rollback', 'failed', rb.error);
  return buildResult(ctx, {
    outcome: 'failed', code: 'E_ROLLBACK_FAILED',
    message: `${code}: ${message}; then the rollback failed: ${rb.error}`, rollback: { mode: rb.mode, ok: false },
  }, startedAt);
}

/** Failure before the node was touched: discard partial work, report. */
export async function failBeforeStop(ctx: StepContext, err: unknown, startedAt: string, code = errorCodeOf(err), message = (err as Error).message): Promise<Result> {
  const cur = ctx.journal.get(ctx.command.id)?.state;
  if (cur) ctx.progress((cur === 'received' ? 'preflight' : cur) as StepName, 'failed', message);
  const id = ctx.data.backupId;
  if (id && ctx.journal.getBackup(id)?.status !== 'complete') ctx.backups.discard(id);
  ctx.journal.transition(ctx.command.id, 'failed', `${code}: ${message}`.slice(0, 1000));
  return buildResult(ctx, { outcome: 'failed', code, message }, startedAt);
}

async function commit(ctx: StepContext, startedAt: string): Promise<Result> {
  await enter(ctx, 'commit');
  ctx.journal.transition(ctx.command.id, 'succeeded');
  ctx.progress('commit', 'done', `running ${ctx.data.toVersion}`);
  // The installed binary is the staged artifact; guts-node.bak keeps the old one.
  if (ctx.data.artifactFile) fs.rmSync(ctx.data.artifactFile, { force: true });
  const result = await buildResult(ctx, { outcome: 'succeeded' }, startedAt);
  await ctx.backups.applyRetention().catch((err: Error) => ctx.log.warn({ err: err.message }, 'backup retention failed'));
  return result;
}

async function step<T>(ctx: StepContext, name: State & StepName, fn: (ctx: StepContext) => Promise<T>): Promise<T> {
  await enter(ctx, name);
  const out = await fn(ctx);
  ctx.progress(name, out === 'none' ? 'skipped' : 'done');
  return out;
}

/** prepare and upgrade commands. */
export async function runUpgrade(ctx: StepContext): Promise<Result> {
  const startedAt = isoNow();
  try {
    await step(ctx, 'preflight', preflight);
    await step(ctx, 'fetch', fetchArtifact);
    if (ctx.command.kind === 'prepare') {
      ctx.journal.transition(ctx.command.id, 'succeeded');
      return buildResult(ctx, { outcome: 'succeeded', message: `staged ${ctx.data.artifactFile}` }, startedAt);
    }
    await step(ctx, 'backup', backup);
  } catch (err) {
    return failBeforeStop(ctx, err, startedAt);
  }
  try {
    await step(ctx, 'stop', stop);
    await step(ctx, 'install', install);
    await step(ctx, 'migrate', migrate);
    await step(ctx, 'start', start);
    await step(ctx, 'verify', verify);
  } catch (err) {
    return rollbackAfter(ctx, err, startedAt);
  }
  return commit(ctx, startedAt);
}

/** The rollback command: undo the last committed upgrade from its backup. */
export async function runRollbackCommand(ctx: StepContext): Promise<Result> {
  const startedAt = isoNow();
  const cmd = ctx.command;
  if (cmd.kind !== 'rollback') throw new CodedError('E_INTERNAL', 'not a rollback command');
  if (!ctx.data.upgradeId) {
    const last = ctx.journal.lastCommittedUpgrade();
    const undone = last ? ctx.journal.rolledBackBy(last.id) : null;
    const backupId = last?.context.backupId as string | undefined;
    const fail = (message: string) => failBeforeStop(ctx, new CodedError('E_NOTHING_TO_ROLLBACK', message), startedAt, 'E_NOTHING_TO_ROLLBACK', message);
    if (!last) return fail('no committed upgrade to roll back');
    if (undone) return fail(`upgrade ${last.id} was already rolled back by ${undone}`);
    if (!backupId || ctx.journal.getBackup(backupId)?.status !== 'complete') return fail(`the backup of upgrade ${last.id} is gone (retention) or incomplete`);
    const lc = last.context as Record<string, unknown>;
    if (cmd.toVersion && cmd.toVersion.replace(/^v/, '') !== lc.fromVersion) {
      return fail(`the last upgrade (${last.id}) came from ${String(lc.fromVersion)}, not ${cmd.toVersion}`);
    }
    ctx.save({
      upgradeId: last.id,
      fromVersion: lc.fromVersion as string,
      toVersion: lc.toVersion as string,
      oldBinarySha: lc.oldBinarySha as string,
      backupId,
      migrationRan: lc.migrationRan === true,
    });
  }
  ctx.journal.transition(cmd.id, 'rollback', `undo ${ctx.data.upgradeId}`);
  ctx.progress('rollback', 'started', `rolling back upgrade ${ctx.data.upgradeId} to ${ctx.data.fromVersion}`);
  await testPause('rollback');
  const rb = await rollbackToOld(ctx);
  // For the wire result, a rollback goes from the upgrade's target back to its origin.
  const data = { ...ctx.data };
  ctx.data.fromVersion = data.toVersion;
  ctx.data.toVersion = data.fromVersion;
  if (rb.ok) {
    ctx.journal.transition(cmd.id, 'succeeded');
    ctx.progress('rollback', 'done', `back on ${data.fromVersion} (${rb.mode})`);
    return buildResult(ctx, { outcome: 'succeeded', rollback: { mode: rb.mode, ok: true } }, startedAt);
  }
  ctx.journal.transition(cmd.id, 'failed', 'rollback failed');
  ctx.progress('rollback', 'failed', rb.error);
  return buildResult(ctx, { outcome: 'failed', code: 'E_ROLLBACK_FAILED', message: rb.error ?? 'rollback failed', rollback: { mode: rb.mode, ok: false } }, startedAt);
}
