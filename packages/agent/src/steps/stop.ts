import type { StepContext } from './context.js';

/**
 * Notes the node's consensus view right before a stop. Any block it produced
 * before the stop is in that view or an earlier one; the coordinator needs one
 * from a later view before it counts the node back. A node that does not answer
 * (already down) keeps the view noted at the earlier stop.
 */
export async function noteStopView(ctx: StepContext): Promise<void> {
  const view = (await ctx.node.consensus())?.view;
  if (typeof view === 'number' && Number.isInteger(view) && view >= 0) ctx.save({ stoppedAtView: Math.max(view, ctx.data.stoppedAtView ?? 0) });
}

/** Stops the node; the moment it went down starts the downtime the result reports. */
export async function stopNode(ctx: StepContext): Promise<void> {
  await noteStopView(ctx);
  ctx.save({ stoppedAt: Date.now() });
  await ctx.driver.stop();
  ctx.progress('stop', 'running', 'node stopped; archiving the delta since the base copy');
}
