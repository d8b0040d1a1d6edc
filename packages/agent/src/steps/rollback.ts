/**
 * Automatic rollback to the old version. Every action is idempotent, so a
 * rollback interrupted by a crash is simply run again on restart.
 */
import fs from 'node:fs';
import { CodedError } from '@guts-upgrade/protocol';
import { copyFileAtomic, sha256File } from '../util.js';
import { addCheck, type StepContext } from './context.js';
import { bakPath } from './install.js';
import { noteStopView } from './stop.js';
import { startAndWaitReady } from './start.js';
import { checkVersions } from './verify.js';

export type RollbackMode = 'binary' | 'binary+data';

async function restoreOldBinary(ctx: StepContext): Promise<void> {
  // The previous image stays in the engine: the container goes back onto it by id.
  if (ctx.driver.images) return ctx.driver.images.restore(ctx);
  const binary = ctx.config.node.binary;
  const oldSha = ctx.data.oldBinarySha;
  const current = fs.existsSync(binary) ? await sha256File(binary) : null;
  if (oldSha && current === oldSha) return;
  const bak = bakPath(binary);
  if (oldSha && fs.existsSync(bak) && (await sha256File(bak)) === oldSha) {
    copyFileAtomic(bak, binary, 0o755);
    return;
  }
  if (!ctx.data.backupId) throw new CodedError('E_ROLLBACK_FAILED', `no usable ${bak} and no backup to restore the binary from`);
  await ctx.backups.restoreBinary(ctx.data.backupId);
}

/** Puts the old version back (binary, plus data when it may have changed) and checks it is healthy. */
export async function rollbackToOld(ctx: StepContext): Promise<{ mode: RollbackMode; ok: boolean; error?: string }> {
  // Blue-green: the old container never changed; undo by phase (blue-green/run.ts).
  if (ctx.data.bg) return (await import('../blue-green/run.js')).blueGreenRollback(ctx);
  let mode: RollbackMode = ctx.data.migrationRan ? 'binary+data' : 'binary';
  const from = ctx.data.fromVersion;
  const attempt = async (m: RollbackMode) => {
    ctx.progress('rollback', 'running', `rolling back (${m}) to ${from}`);
    await noteStopView(ctx);
    await ctx.driver.stop();
    await restoreOldBinary(ctx);
    if (m === 'binary+data') {
      const row = ctx.data.backupId ? ctx.journal.getBackup(ctx.data.backupId) : null;
      if (row?.status !== 'complete') throw new CodedError('E_ROLLBACK_FAILED', 'the data must be restored but the backup is not complete');
      ctx.progress('rollback', 'running', `restoring the data dir from backup ${row.id}`);
      await ctx.backups.restoreData(row.id);
    }
    await startAndWaitReady(ctx, 'rollback');
    if (from) await checkVersions(ctx, from, 'rollback-');
  };
  try {
    await attempt(mode);
    return { mode, ok: true };
  } catch (err) {
    ctx.log.error({ err: (err as Error).message, mode }, 'rollback attempt failed');
    // The old binary did not come back healthy on the current data: the data
    // changed after all (e.g. a faulty build wrote to it). Restore it too.
    const row = ctx.data.backupId ? ctx.journal.getBackup(ctx.data.backupId) : null;
    if (mode === 'binary' && row?.status === 'complete') {
      mode = 'binary+data';
      ctx.save({ migrationRan: true });
      try {
        await attempt(mode);
        return { mode, ok: true };
      } catch (err2) {
        addCheck(ctx, 'rollback', false, (err2 as Error).message);
        return { mode, ok: false, error: (err2 as Error).message };
      }
    }
    addCheck(ctx, 'rollback', false, (err as Error).message);
    return { mode, ok: false, error: (err as Error).message };
  }
}
