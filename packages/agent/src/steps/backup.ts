import { newBackupId } from '../backup-store.js';
import type { StepContext } from './context.js';

/** Base copy of binary, config and data while the node still runs (pre-copy keeps downtime short). */
export async function backup(ctx: StepContext): Promise<void> {
  const id = newBackupId();
  ctx.save({ backupId: id });
  ctx.progress('backup', 'running', `pre-copying ${ctx.config.node.dataDir} into backup ${id} while the node runs`);
  const row = await ctx.backups.createBase(id, ctx.command.id, ctx.data.fromVersion ?? null);
  ctx.progress('backup', 'running', `base archive ${row.meta.dataBase?.size ?? 0} bytes`);
}

/** Completes the backup with what changed since the base copy; runs once the node is stopped, so the data dir is still. */
export async function sealBackup(ctx: StepContext): Promise<void> {
  const row = await ctx.backups.seal(ctx.data.backupId!);
  ctx.progress('stop', 'running', `backup ${row.id} sealed (delta ${row.meta.dataDelta?.size ?? 0} bytes, ${row.meta.deleted?.length ?? 0} deletions)`);
}
