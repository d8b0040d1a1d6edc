import { CodedError } from '@guts-upgrade/protocol';
import { fillArgv } from '../config.js';
import { parseMetrics, type ConsensusStatus, type MetricsSample, type PeerReading } from '../node-client.js';
import { runArgv, sleep, tailLines } from '../util.js';
import { asUser } from '../run-as.js';
import { addCheck, type StepContext } from './context.js';
import { placeholders } from './migrate.js';
import { binaryVersion } from './preflight.js';
import { pollUntil, type PollOptions } from './wait.js';

/** Poll options shared by every waiting check: backoff capped at checks.pollMaxMs. */
function polling(ctx: StepContext): Pick<PollOptions<unknown>, 'maxMs'> {
  return { maxMs: ctx.config.checks.pollMaxMs };
}

/**
 * While a check waits, the node must stay up and ready: a node warming up
 * does, a node that exits or loses readiness is not warming up, and the
 * waiting check fails at once (E_START, E_HEALTH_TIMEOUT) instead of at its
 * deadline. Returns a function to call before every read.
 */
function staysUp(ctx: StepContext, check: string): () => Promise<void> {
  let inactive = 0;
  let notReadySince: number | null = null;
  return async () => {
    // Two readings in a row: a systemd unit can be briefly 'activating'.
    if (!(await ctx.driver.isActive())) {
      if (++inactive >= 2) {
        const tail = await ctx.driver.logTail(20);
        addCheck(ctx, check, false, `the node exited while the check waited: ${tail.slice(-3).join('\n')}`);
        throw new CodedError('E_START', `guts-node exited after becoming ready (during the ${check} check)`, { logTail: tail });
      }
    } else inactive = 0;
    if (!(await ctx.node.ready())) {
      notReadySince ??= Date.now();
      if (Date.now() - notReadySince > 500) {
        addCheck(ctx, check, false, 'lost readiness while the check waited', { last: 'not ready' });
        throw new CodedError('E_HEALTH_TIMEOUT', `guts-node lost readiness after start (during the ${check} check)`);
      }
    } else notReadySince = null;
  };
}

/** The installed binary and the running process both claim `expected`; the process may take a while to say so. */
export async function checkVersions(ctx: StepContext, expected: string, label: string): Promise<void> {
  // On a container host what is installed is the container's image.
  const image = ctx.driver.images ? await ctx.driver.images.current() : null;
  const bin = image ?? (await binaryVersion(ctx.config.node.binary, 60_000, (await ctx.identities()).node));
  const what = image ? `image ${image.imageId}` : ctx.config.node.binary;
  addCheck(ctx, `${label}binary-version`, bin.version === expected, `${image ? `${what}: ` : ''}--version: ${bin.output.slice(0, 200)}`, {
    last: bin.version ?? bin.output.slice(0, 100),
  });
  if (bin.version !== expected)
    throw new CodedError('E_VERSION_MISMATCH', `${what} --version says ${JSON.stringify(bin.output.slice(0, 200))}, expected ${expected}`);
  const timeoutMs = ctx.config.checks.versionTimeoutMs;
  const up = staysUp(ctx, `${label}running-version`);
  const r = await pollUntil({
    ...polling(ctx),
    read: async () => {
      await up();
      return ctx.node.runningVersion();
    },
    done: (v) => v === expected,
    timeoutMs,
  });
  const seen = r.value ?? 'nothing';
  addCheck(ctx, `${label}running-version`, r.ok, `the node reports ${seen}${r.ok ? '' : ` after ${r.waitedMs} ms, expected ${expected}`}`, {
    waitedMs: r.waitedMs,
    last: seen,
  });
  if (!r.ok)
    throw new CodedError(
      'E_VERSION_MISMATCH',
      `the running node reports version ${r.value ?? '(none)'} after waiting ${r.waitedMs} ms (checks.versionTimeoutMs ${timeoutMs}), expected ${expected}`,
    );
}

const describeConsensus = (cs: ConsensusStatus | null) =>
  cs ? `enabled=${cs.enabled} state=${cs.state} height=${cs.finalized_height} view=${cs.view}` : 'no consensus status';

/** The engine is enabled, reports a height, and its state has left the starting states. */
async function checkConsensus(ctx: StepContext): Promise<void> {
  const c = ctx.config.checks;
  const starting = new Set(c.consensusStartingStates);
  const up = staysUp(ctx, 'consensus');
  const r = await pollUntil({
    ...polling(ctx),
    read: async () => {
      await up();
      return ctx.node.consensus();
    },
    done: (cs) => !!cs && cs.enabled === true && typeof cs.finalized_height === 'number' && !starting.has(String(cs.state)),
    timeoutMs: c.consensusTimeoutMs,
    onPoll: (cs) => ctx.progress('verify', 'running', `waiting for consensus to leave ${[...starting].join('/')}: ${describeConsensus(cs)}`),
  });
  const last = r.value ? String(r.value.state) : 'no consensus status';
  addCheck(ctx, 'consensus', r.ok, `${describeConsensus(r.value)}${r.ok ? '' : ` after ${r.waitedMs} ms`}`, { waitedMs: r.waitedMs, last });
  if (!r.ok) {
    throw new CodedError(
      'E_CONSENSUS',
      `consensus not active after ${r.waitedMs} ms (checks.consensusTimeoutMs ${c.consensusTimeoutMs}; starting states ${[...starting].join(', ')}): ${JSON.stringify(r.value)}`,
    );
  }
}

const describePeers = (p: PeerReading) => (p.reported ? `${p.count} peers (p2p ${p.status})` : `not reported: ${p.reason}`);

/**
 * Watches the node's peers while the chain checks run. Passes once the node
 * reports p2p `up` with at least minPeers peers; fails (E_PEERS) only if at
 * its deadline the node still reports fewer (or p2p `down`); a figure the node
 * never gives is recorded as not reported once the chain checks are done, and
 * then the chain alone has shown the node is back.
 */
function watchPeers(ctx: StepContext): { chainDone(): void; cancel(): void; result: Promise<{ failed: CodedError | null }> } {
  const c = ctx.config.checks;
  const wake = new AbortController();
  let chainDone = false;
  let cancelled = false;
  const enough = (p: PeerReading) => p.reported && p.status === 'up' && p.count >= c.minPeers;
  const result = pollUntil({
    ...polling(ctx),
    read: () => ctx.node.peers(),
    done: (p) => (c.minPeers === 0 ? p.reported : enough(p)),
    giveUp: (p) => cancelled || (chainDone && !p.reported),
    wake: wake.signal,
    timeoutMs: c.peersTimeoutMs,
  }).then((r) => {
    const p = r.value;
    const need = c.minPeers === 0 ? 'no minimum' : `need ${c.minPeers}`;
    if (cancelled) return { failed: null };
    if (!p.reported) {
      addCheck(ctx, 'peers', true, `${describePeers(p)}; the chain checks judged the node (${need})`, {
        waitedMs: r.waitedMs,
        last: 'not reported',
        measured: false,
      });
      return { failed: null };
    }
    if (r.ok || c.minPeers === 0) {
      addCheck(ctx, 'peers', true, `${describePeers(p)}, ${need}`, { waitedMs: r.waitedMs, last: String(p.count) });
      return { failed: null };
    }
    addCheck(ctx, 'peers', false, `${describePeers(p)} after ${r.waitedMs} ms, ${need}`, { waitedMs: r.waitedMs, last: String(p.count) });
    return {
      failed: new CodedError(
        'E_PEERS',
        `${p.count} peers connected (p2p ${p.status}) after waiting ${r.waitedMs} ms (checks.peersTimeoutMs ${c.peersTimeoutMs}), need at least ${c.minPeers}`,
      ),
    };
  });
  return {
    chainDone() {
      chainDone = true;
      wake.abort();
    },
    cancel() {
      cancelled = true;
      wake.abort();
    },
    result,
  };
}

/** Thrown inside the chain checks when the peers check has already failed the upgrade. */
class Stopped extends Error {}

/** Caught up to referenceHeight (from the coordinator) within syncDistance. */
async function checkCaughtUp(ctx: StepContext, referenceHeight: number, distance: number, stopped: () => boolean): Promise<void> {
  const c = ctx.config.checks;
  const want = Math.max(0, referenceHeight - distance);
  const up = staysUp(ctx, 'caught-up');
  const r = await pollUntil({
    ...polling(ctx),
    read: async () => {
      await up();
      return (await ctx.node.consensus())?.finalized_height ?? -1;
    },
    done: (h) => h >= want,
    giveUp: stopped,
    timeoutMs: c.syncTimeoutMs,
    onPoll: (h) => ctx.progress('verify', 'running', `catching up: height ${h} of ${want}`),
  });
  if (r.gaveUp) throw new Stopped();
  addCheck(ctx, 'caught-up', r.ok, `height ${r.value}, want >= ${want}${r.ok ? '' : ` after ${r.waitedMs} ms`}`, {
    waitedMs: r.waitedMs,
    last: String(r.value),
  });
  if (!r.ok)
    throw new CodedError(
      'E_SYNC_TIMEOUT',
      `finalized height ${r.value} did not reach ${want} (reference ${referenceHeight} - ${distance}) within ${c.syncTimeoutMs} ms`,
    );
}

/**
 * Stabilisation: the node stays up and ready for the window while the chain
 * advances; then, if the height has not passed its value at the start yet,
 * waits for it until advanceTimeoutMs (counted from the start of the window).
 */
async function checkStable(ctx: StepContext, stopped: () => boolean): Promise<void> {
  const c = ctx.config.checks;
  const windowMs = Math.max(c.advanceWindowMs, c.stabilizeMs);
  if (windowMs <= 0) return;
  const height = async () => (await ctx.node.consensus())?.finalized_height ?? null;
  const h0 = await height();
  const t0 = Date.now();
  let notReadySince: number | null = null;
  let hN = h0;
  while (Date.now() - t0 < windowMs) {
    if (stopped()) throw new Stopped();
    if (!(await ctx.driver.isActive())) {
      const tail = await ctx.driver.logTail(20);
      addCheck(ctx, 'stable', false, `exited after becoming ready: ${tail.slice(-3).join('\n')}`, { waitedMs: Date.now() - t0 });
      throw new CodedError('E_START', 'guts-node exited after becoming ready', { logTail: tail });
    }
    if (!(await ctx.node.ready())) {
      notReadySince ??= Date.now();
      if (Date.now() - notReadySince > 500) {
        addCheck(ctx, 'stable', false, 'lost readiness during the stabilisation window', { waitedMs: Date.now() - t0, last: 'not ready' });
        throw new CodedError('E_HEALTH_TIMEOUT', 'guts-node lost readiness after start');
      }
    } else notReadySince = null;
    const cur = await height();
    if (cur !== null) hN = cur;
    await sleep(200);
  }
  addCheck(ctx, 'stable', true, `ready for ${Date.now() - t0} ms`, { waitedMs: Date.now() - t0 });
  if (c.advanceWindowMs <= 0) return;
  const passed = (h: number | null) => h0 !== null && h !== null && h > h0;
  let last = hN;
  let waitedMs = Date.now() - t0;
  if (!passed(hN)) {
    const up = staysUp(ctx, 'height-advancing');
    const r = await pollUntil({
      ...polling(ctx),
      read: async () => {
        await up();
        return height();
      },
      done: passed,
      giveUp: stopped,
      timeoutMs: Math.max(0, c.advanceTimeoutMs - (Date.now() - t0)),
      onPoll: (h) => ctx.progress('verify', 'running', `waiting for the finalized height to pass ${h0}: ${h}`),
    });
    if (r.gaveUp) throw new Stopped();
    last = r.value ?? hN;
    waitedMs = Date.now() - t0;
  }
  const advanced = passed(last);
  addCheck(ctx, 'height-advancing', advanced, `height ${h0} -> ${last}`, { waitedMs, last: String(last) });
  if (!advanced) throw new CodedError('E_CONSENSUS', `finalized height did not advance (${h0} -> ${last}) within ${c.advanceTimeoutMs} ms`);
}

function rates(s: MetricsSample, base?: MetricsSample): { errorRate: number; latencyMs: number | null; requests: number } {
  const req = s.requests - (base?.requests ?? 0);
  const err = s.errors - (base?.errors ?? 0);
  const cnt = s.latencyCount - (base?.latencyCount ?? 0);
  const sum = s.latencySum - (base?.latencySum ?? 0);
  return { errorRate: req > 0 ? err / req : 0, latencyMs: cnt > 0 ? (sum / cnt) * 1000 : null, requests: req };
}

/**
 * Post-start checks, each waiting for its condition until its own deadline:
 * versions, consensus out of its starting states, then together the peers
 * (when the node reports them) and the chain (caught up to referenceHeight,
 * ready and advancing through the stabilisation window), then the smoke
 * command and the metrics against the baseline.
 */
export async function verify(ctx: StepContext): Promise<void> {
  const c = ctx.config.checks;
  const cmd = ctx.command;
  const opts = cmd.kind === 'upgrade' ? (cmd.options ?? {}) : {};
  await checkVersions(ctx, ctx.data.toVersion!, '');
  await checkConsensus(ctx);

  const peers = watchPeers(ctx);
  let peersFailed: CodedError | null = null;
  void peers.result.then((r) => {
    peersFailed = r.failed;
  });
  const stopped = () => peersFailed !== null;
  try {
    if (opts.referenceHeight !== undefined) await checkCaughtUp(ctx, opts.referenceHeight, opts.syncDistance ?? c.syncDistance, stopped);
    await checkStable(ctx, stopped);
  } catch (err) {
    if (!(err instanceof Stopped)) {
      peers.cancel();
      await peers.result;
      throw err;
    }
  }
  peers.chainDone();
  const { failed } = await peers.result;
  if (failed) throw failed;

  if (ctx.config.commands.smoke) {
    const argv = fillArgv(ctx.config.commands.smoke, placeholders(ctx));
    const r = await runArgv(argv, { timeoutMs: c.commandTimeoutMs, ...asUser((await ctx.identities()).node) });
    const out = tailLines(`${r.stdout}\n${r.stderr}`, 10).join('\n');
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
      const latBad =
        now.latencyMs !== null && before.latencyMs !== null && now.latencyMs > c.minLatencyMs && now.latencyMs > before.latencyMs * c.maxLatencyFactor;
      const detail = `error rate ${before.errorRate.toFixed(4)} -> ${now.errorRate.toFixed(4)}, mean latency ${before.latencyMs?.toFixed(2) ?? '?'} -> ${now.latencyMs?.toFixed(2) ?? '?'} ms`;
      // A handful of requests cannot show a rate; judge only with enough traffic.
      const enough = now.requests >= 50;
      const ok = !enough || (errUp <= c.maxErrorRateIncrease && !latBad);
      addCheck(ctx, 'metrics', ok, enough ? detail : `${detail} (only ${now.requests} requests: not judged)`, enough ? {} : { measured: false });
      if (!ok) throw new CodedError('E_METRICS_REGRESSION', detail);
    } else addCheck(ctx, 'metrics', true, 'metrics not available after start; skipped', { measured: false });
  }
}
