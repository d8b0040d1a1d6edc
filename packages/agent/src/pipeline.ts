/**
 * The single-node upgrade, top to bottom. Each step is journaled before it
 * runs (see state.ts for what a crash in each state means), reports progress,
 * and on failure after the node was touched rolls back automatically.
 *
 *   preflight -> fetch -> backup            (node untouched; failure = failUntouched)
 *   stop -> install -> migrate -> start -> verify   (failure = rollBackAfter)
 *   commit
 *
 * `backup` copies the data while the node still runs; `stop` stops the node
 * and then seals that backup with what changed since the copy (only a stopped
 * node leaves the data dir still), so downtime pays for the delta alone.
 */
import fs from 'node:fs';
import { boundNodeLog, CodedError, errorCodeOf, NODE_LOG_LINES, type CheckResult, type ErrorCode, type Result, type StepName } from '@guts-upgrade/protocol';
import type { State } from './state.js';
import { backup, sealBackup } from './steps/backup.js';
import type { StepContext } from './steps/context.js';
import { fetchArtifact } from './steps/fetch.js';
import { install } from './steps/install.js';
import { migrate } from './steps/migrate.js';
import { refuseValidator } from './blue-green/refuse.js';
import { preflight } from './steps/preflight.js';
import { rollbackToOld } from './steps/rollback.js';
import { start } from './steps/start.js';
import { stopNode } from './steps/stop.js';
import { verify } from './steps/verify.js';
import { isoNow } from './util.js';

export async function enter(ctx: StepContext, state: State & StepName): Promise<void> {
  ctx.journal.transition(ctx.command.id, state);
  ctx.progress(state, 'started');
  await ctx.afterJournal(state);
}

/** Why a command did not succeed, as its result reports it. */
export interface Failure {
  code: ErrorCode;
  message: string;
}

/** The failure an error stands for: its code (E_INTERNAL when it has none) and message. */
export function failureOf(err: unknown): Failure {
  return { code: errorCodeOf(err), message: err instanceof Error ? err.message : String(err) };
}

export interface Outcome {
  outcome: Result['outcome'];
  code?: Result['code'];
  message?: string;
  rollback?: Result['rollback'];
  /** The node's log as it stood at the failure (a rollback restarts the node and buries it). */
  nodeLog?: string[];
}

async function nodeLogNow(ctx: StepContext): Promise<string[]> {
  return boundNodeLog(await ctx.driver.logTail(NODE_LOG_LINES).catch(() => []));
}

/** Builds the wire result from what the context recorded. */
export async function buildResult(ctx: StepContext, o: Outcome, startedAt: string): Promise<Result> {
  const d = ctx.data;
  const failed = o.outcome !== 'succeeded';
  // The node's own words on a failure, bounded as the protocol says (the coordinator keeps no more).
  const nodeLog = failed ? (o.nodeLog ?? (await nodeLogNow(ctx))) : [];
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
    ...(d.stoppedAtView != null ? { stoppedAtView: d.stoppedAtView } : {}),
    ...(o.rollback ? { rollback: o.rollback } : {}),
    evidence: { checks, journalTail: transitions.slice(-200).map((l) => l.slice(0, 4000)), ...(failed ? { nodeLog } : {}) },
    startedAt,
    finishedAt: isoNow(),
  };
  return r;
}

/**
 * After a failure at or after stop (the node was touched): puts the old
 * version back. Outcomes: rolled_back carrying the failure's code when the old
 * version runs healthy again; failed with E_ROLLBACK_FAILED (the original
 * failure in the message) when it does not.
 */
export async function rollBackAfter(ctx: StepContext, failure: Failure, startedAt: string): Promise<Result> {
  const { code, message } = failure;
  ctx.save({ failure: { code, message, step: ctx.journal.get(ctx.command.id)?.state ?? '?' } });
  const nodeLog = await nodeLogNow(ctx);
  ctx.journal.transition(ctx.command.id, 'rollback', `${code}: ${message}`.slice(0, 1000));
  ctx.progress('rollback', 'started', message);
  await ctx.afterJournal('rollback');
  const rb = await rollbackToOld(ctx);
  if (rb.ok) {
    ctx.journal.transition(ctx.command.id, 'rolled_back');
    ctx.progress('rollback', 'done', `back on ${ctx.data.fromVersion} (${rb.mode})`);
    return buildResult(ctx, { outcome: 'rolled_back', code, message, rollback: { mode: rb.mode, ok: true }, nodeLog }, startedAt);
  }
  ctx.journal.transition(ctx.command.id, 'failed', 'rollback failed');
  ctx.progress('rollback', 'failed', rb.error);
  return buildResult(
    ctx,
    {
      outcome: 'failed',
      code: 'E_ROLLBACK_FAILED',
      message: `${code}: ${message}; then the rollback failed: ${rb.error}`,
      rollback: { mode: rb.mode, ok: false },
      nodeLog,
    },
    startedAt,
  );
}

/**
 * After a failure before stop (the node was never touched): discards a
 * backup left incomplete and ends the command failed with the failure's code.
 */
export async function failUntouched(ctx: StepContext, failure: Failure, startedAt: string): Promise<Result> {
  const { code, message } = failure;
  const cur = ctx.journal.get(ctx.command.id)?.state;
  if (cur) ctx.progress((cur === 'received' ? 'preflight' : cur) as StepName, 'failed', message);
  const id = ctx.data.backupId;
  if (id && ctx.journal.getBackup(id)?.status !== 'complete') ctx.backups.discard(id);
  ctx.journal.transition(ctx.command.id, 'failed', `${code}: ${message}`.slice(0, 1000));
  return buildResult(ctx, { outcome: 'failed', code, message }, startedAt);
}

async function commit(ctx: StepContext, startedAt: string): Promise<Result> {
  await enter(ctx, 'commit');
  if (ctx.data.bg) await finalizeBlueGreen(ctx);
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
    if (ctx.config.blueGreen && ctx.command.kind === 'upgrade') await refuseValidator(ctx);
    await step(ctx, 'fetch', fetchArtifact);
    if (ctx.command.kind === 'prepare') {
      ctx.journal.transition(ctx.command.id, 'succeeded');
      return buildResult(ctx, { outcome: 'succeeded', message: `staged ${ctx.data.artifactFile}` }, startedAt);
    }
    if (ctx.config.blueGreen) return runBlueGreen(ctx, startedAt);
    await step(ctx, 'backup', backup);
  } catch (err) {
    return failUntouched(ctx, failureOf(err), startedAt);
  }
  try {
    await step(ctx, 'stop', stopNodeThenSealBackup);
    await step(ctx, 'install', install);
    await step(ctx, 'migrate', migrate);
    await step(ctx, 'start', start);
    await step(ctx, 'verify', verify);
  } catch (err) {
    return rollBackAfter(ctx, failureOf(err), startedAt);
  }
  return commit(ctx, startedAt);
}

/**
 * A follower with a blueGreen section (blue-green/run.ts): backup copies the
 * data for the new container, install creates it, start starts it beside the
 * live one, verify checks it and moves the traffic; stop and migrate are not
 * passed (the live container keeps serving; a new build migrates its copy on
 * start). Loaded on first use: it needs the Docker client.
 */
async function runBlueGreen(ctx: StepContext, startedAt: string): Promise<Result> {
  const bg = await import('./blue-green/run.js');
  let touched = false;
  try {
    await bg.blueGreenSteps(
      ctx,
      (name, fn) => step(ctx, name, fn),
      () => {
        touched = true;
      },
    );
  } catch (err) {
    return touched ? rollBackAfter(ctx, failureOf(err), startedAt) : failUntouched(ctx, failureOf(err), startedAt);
  }
  return commit(ctx, startedAt);
}

/**
 * commit of a blue-green upgrade: the old container removed, the new one takes
 * its name. Traffic is on the new one already, so a failure here is reported,
 * not rolled back: the stopped old container is only left over.
 */
export async function finalizeBlueGreen(ctx: StepContext): Promise<void> {
  try {
    await (await import('./blue-green/run.js')).finalize(ctx);
  } catch (err) {
    ctx.log.warn({ err: (err as Error).message }, 'blue-green: the old container could not be removed or the new one renamed');
    ctx.progress('commit', 'running', `left over: ${(err as Error).message}`);
  }
}

/** The journaled step `stop`: the node goes down, then the backup is completed (see the header). */
async function stopNodeThenSealBackup(ctx: StepContext): Promise<void> {
  await stopNode(ctx);
  await sealBackup(ctx);
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
    const fail = (message: string) => failUntouched(ctx, { code: 'E_NOTHING_TO_ROLLBACK', message }, startedAt);
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
      // Container hosts: the images; the container's configuration is read again (the operator may have changed it since).
      ...(typeof lc.oldImage === 'string' ? { oldImage: lc.oldImage, newImage: lc.newImage as string } : {}),
      ...('prevOverride' in lc ? { prevOverride: lc.prevOverride as string | null } : {}),
    });
  }
  ctx.journal.transition(cmd.id, 'rollback', `undo ${ctx.data.upgradeId}`);
  ctx.progress('rollback', 'started', `rolling back upgrade ${ctx.data.upgradeId} to ${ctx.data.fromVersion}`);
  await ctx.afterJournal('rollback');
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
  return buildResult(
    ctx,
    { outcome: 'failed', code: 'E_ROLLBACK_FAILED', message: rb.error ?? 'rollback failed', rollback: { mode: rb.mode, ok: false } },
    startedAt,
  );
}
