import { CodedError } from '@guts-upgrade/protocol';
import { sleep } from '../util.js';
import { addCheck, type StepContext } from './context.js';

/**
 * Starts the service and waits for /health/ready. A process that exits while
 * we wait fails fast with E_START; no readiness in time is E_HEALTH_TIMEOUT.
 */
export async function startAndWaitReady(ctx: StepContext, step: 'start' | 'rollback' = 'start'): Promise<number> {
  const timeout = ctx.config.checks.readyTimeoutMs;
  await ctx.driver.start();
  const t0 = Date.now();
  let lastNote = 0;
  let inactive = 0;
  for (;;) {
    if (await ctx.node.ready()) {
      addCheck(ctx, `${step}-ready`, true, `ready after ${Date.now() - t0} ms`);
      return Date.now();
    }
    if (!(await ctx.driver.isActive())) {
      // Two consecutive readings: a systemd unit can be briefly 'activating'.
      if (++inactive >= 2) {
        const tail = await ctx.driver.logTail(20);
        addCheck(ctx, `${step}-running`, false, `the node exited: ${tail.slice(-5).join('\n')}`);
        throw new CodedError('E_START', 'guts-node exited during start', { logTail: tail });
      }
    } else inactive = 0;
    if (Date.now() - t0 > timeout) {
      const tail = await ctx.driver.logTail(20);
      addCheck(ctx, `${step}-ready`, false, `not ready after ${timeout} ms`);
      throw new CodedError('E_HEALTH_TIMEOUT', `guts-node not ready after ${timeout} ms`, { logTail: tail });
    }
    if (Date.now() - lastNote > 2000) {
      lastNote = Date.now();
      const tail = await ctx.driver.logTail(5);
      const migrating = tail.some((l) => /migrat/i.test(l));
      ctx.progress(step, 'running', migrating ? 'node is migrating its storage schema' : 'waiting for /health/ready');
    }
    await sleep(100);
  }
}

export async function start(ctx: StepContext): Promise<void> {
  const readyAt = await startAndWaitReady(ctx, 'start');
  ctx.save({ readyAt });
}
