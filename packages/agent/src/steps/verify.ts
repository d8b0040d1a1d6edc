import { CodedError } from '@guts-upgrade/protocol';
import { fillArgv } from '../config.js';
import { parseMetrics, type MetricsSample } from '../node-client.js';
import { runArgv, sleep, tailLines } from '../util.js';
import { addCheck, type StepContext } from './context.js';
import { placeholders } from './migrate.js';
import { binaryVersion } from './preflight.js';

/** The installed binary and the running process both claim `expected`. */
export async function checkVersions(ctx: StepContext, expected: string, label: string): Promise<void> {
  const bin = await binaryVersion(ctx.config.node.binary);
  addCheck(ctx, `${label}binary-version`, bin.version === expected, `--version: ${bin.output.slice(0, 200)}`);
  if (bin.version !== expected) throw new CodedError('E_VERSION_MISMATCH', `${ctx.config.node.binary} --version says ${JSON.stringify(bin.output.slice(0, 200))}, expected ${expected}`);
  let running: string | null = null;
  const deadline = Date.now() + Math.min(ctx.config.checks.readyTimeoutMs, 10_000);
  while ((running = await ctx.node.runningVersion()) === null && Date.now() < deadline) await sleep(200);
  addCheck(ctx, `${label}running-version`, running === expected, `the node reports ${running ?? 'nothing'}`);
  if (running !== expected) throw new CodedError('E_VERSION_MISMATCH', `the running node reports version ${running ?? '(none)'}, expected ${expected}`);
}

function rates(s: MetricsSample, base?: MetricsSample): { errorRate: number; latencyMs: number | null; requests: number } {
  const req = s.requests - (base?.requests ?? 0);
  const err = s.errors - (base?.errors ?? 0);
  const cnt = s.latencyCount - (base?.latencyCount ?? 0);
  const sum = s.latencySum - (base?.latencySum ?? 0);
  return { errorRate: req > 0 ? err / req : 0, latencyMs: cnt > 0 ? (sum / cnt) * 1000 : null, requests: req };
}

/**
 * Post-start checks, each with its own timeout: versions, consensus sanity,
 * peers, catch-up to referenceHeight, height advancing while the node stays
 * ready for the stabilisation window, smoke command, metrics vs. baseline.
 */
export async function verify(ctx: StepContext): Promise<void> {
  const c = ctx.config.checks;
  const cmd = ctx.command;
  const opts = cmd.kind === 'upgrade' ? cmd.options ?? {} : {};
  await checkVersions(ctx, ctx.data.toVersion!, '');

  const cs = await ctx.node.consensus();
  const sane = !!cs && cs.enabled === true && typeof cs.finalized_height === 'number';
  addCheck(ctx, 'consensus', sane, cs ? `enabled=${cs.enabled} state=${cs.state} height=${cs.finalized_height} view=${cs.view}` : 'no consensus status');
  if (!sane) throw new CodedError('E_CONSENSUS', `consensus status not sane: ${JSON.stringify(cs)}`);

  const peers = await ctx.node.peerCount();
  const peersOk = c.minPeers === 0 || (peers ?? 0) >= c.minPeers;
  addCheck(ctx, 'peers', peersOk, `${peers ?? 'unknown'} peers, need ${c.minPeers}`);
  if (!peersOk) throw new CodedError('E_PEERS', `${peers ?? 'unknown'} peers connected, need at least ${c.minPeers}`);

  if (opts.referenceHeight !== undefined) {
    const distance = opts.syncDistance ?? c.syncDistance;
    const want = Math.max(0, opts.referenceHeight - distance);
    const deadline = Date.now() + c.syncTimeoutMs;
    let h = -1;
    for (;;) {
      h = (await ctx.node.consensus())?.finalized_height ?? -1;
      if (h >= want) break;
      if (Date.now() > deadline) {
        addCheck(ctx, 'caught-up', false, `height ${h}, want >= ${want}`);
        throw new CodedError('E_SYNC_TIMEOUT', `finalized height ${h} did not reach ${want} (reference ${opts.referenceHeight} - ${distance}) within ${c.syncTimeoutMs} ms`);
      }
      ctx.progress('verify', 'running', `catching up: height ${h} of ${want}`);
      await sleep(250);
    }
    addCheck(ctx, 'caught-up', true, `height ${h} >= ${want}`);
  }

  // Stabilisation: the node stays up and ready while the chain advances.
  const windowMs = Math.max(c.advanceWindowMs, c.stabilizeMs);
  if (windowMs > 0) {
    const h0 = (await ctx.node.consensus())?.finalized_height ?? null;
    const t0 = Date.now();
    let notReadySince: number | null = null;
    let hN = h0;
    while (Date.now() - t0 < windowMs || (c.advanceWindowMs > 0 && h0 !== null && (hN ?? 0) <= h0 && Date.now() - t0 < c.syncTimeoutMs)) {
      if (!(await ctx.driver.isActive())) {
        const tail = await ctx.driver.logTail(20);
        addCheck(ctx, 'stable', false, `exited after becoming ready: ${tail.slice(-3).join('\n')}`);
        throw new CodedError('E_START', 'guts-node exited after becoming ready', { logTail: tail });
      }
      if (!(await ctx.node.ready())) {
        notReadySince ??= Date.now();
        if (Date.now() - notReadySince > 500) {
          addCheck(ctx, 'stable', false, 'lost readiness during the stabilisation window');
          throw new CodedError('E_HEALTH_TIMEOUT', 'guts-node lost readiness after start');
        }
      } else notReadySince = null;
      const cur = (await ctx.node.consensus())?.finalized_height;
      if (typeof cur === 'number') hN = cur;
      await sleep(200);
    }
    addCheck(ctx, 'stable', true, `ready for ${Date.now() - t0} ms`);
    if (c.advanceWindowMs > 0) {
      const advanced = h0 !== null && hN !== null && hN > h0;
      addCheck(ctx, 'height-advancing', advanced, `height ${h0} -> ${hN}`);
      if (!advanced) throw new CodedError('E_CONSENSUS', `finalized height did not advance (${h0} -> ${hN})`);
    }
  }

  if (ctx.config.commands.smoke) {
    const argv = fillArgv(ctx.config.commands.smoke, placeholders(ctx));
    const r = await runArgv(argv, { timeoutMs: c.commandTimeoutMs });
    const out = tailLines(r.stdout + '\n' + r.stderr, 10).join('\n');
    addCheck(ctx, 'smoke', r.code === 0, `exit ${r.code ?? r.signal}: ${out}`);
    if (r.code !== 0) throw new CodedError('E_SMOKE', `smoke command exited ${r.code ?? r.signal}: ${out.slice(-1000)}`);
  }

  const baseline = ctx.data.baseline;
  if (baseline && ctx.node.metricsUrl) {
    const a = await ctx.node.metricsText();
    await sleep(Math.min(1000, Math.max(200, c.stabilizeMs / 2)));
    const b = await ctx.node.metricsText();
    if (a && b) {
      const before = rates(baseline);
      const after = rates(parseMetrics(b), parseMetrics(a));
      // Too few requests in the window to judge: take the whole run since start instead.
      const now = after.requests >= 20 ? after : rates(parseMetrics(b));
      const errUp = now.errorRate - before.errorRate;
      const latBad = now.latencyMs !== null && before.latencyMs !== null
        && now.latencyMs > c.minLatencyMs && now.latencyMs > before.latencyMs * c.maxLatencyFactor;
      const detail = `error rate ${before.errorRate.toFixed(4)} -> ${now.errorRate.toFixed(4)}, mean latency ${before.latencyMs?.toFixed(2) ?? '?'} -> ${now.latencyMs?.toFixed(2) ?? '?'} ms`;
      // A handful of requests cannot show a rate; judge only with enough traffic.
      const enough = now.requests >= 50;
      const ok = !enough || (errUp <= c.maxErrorRateIncrease && !latBad);
      addCheck(ctx, 'metrics', ok, enough ? detail : `${detail} (only ${now.requests} requests: not judged)`);
      if (!ok) throw new CodedError('E_METRICS_REGRESSION', detail);
    } else addCheck(ctx, 'metrics', true, 'metrics not available after start; skipped');
  }
}
