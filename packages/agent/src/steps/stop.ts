import type { StepContext } from './context.js';

/** Stops the node, then seals the backup with the delta of what changed since the base copy. */
export async function stop(ctx: StepContext): Promise<void> {
  ctx.save({ stoppedAt: Date.now() });
  await ctx.driver.stop();
  ctx.progress('stop', 'running', 'node stopped; archiving the delta since the base copy');
  const row = await ctx.backups.seal(ctx.data.backupId!);
  ctx.progress('stop', 'running', `backup ${row.id} sealed (delta ${row.meta.dataDelta?.size ?? 0} bytes, ${row.meta.deleted?.length ?? 0} deletions)`);
}
