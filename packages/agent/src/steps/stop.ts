import type { StepContext } from './context.js';

/** Stops the node; the moment it went down starts the downtime the result reports. */
export async function stopNode(ctx: StepContext): Promise<void> {
  ctx.save({ stoppedAt: Date.now() });
  await ctx.driver.stop();
  ctx.progress('stop', 'running', 'node stopped; archiving the delta since the base copy');
}
