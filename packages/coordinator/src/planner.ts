/**
 * Dry-run planning: validates a rollout request against the fleet and the
 * version matrix and lays out the intended waves. Pure.
 */
import { CodedError, faultTolerance, idealWaves, quorumSize, upgradePath, type UpgradePath } from '@guts-upgrade/protocol';
import type { FleetView, RolloutOptions, Strategy } from './model.js';
import type { RolloutTarget } from './target.js';
import { contradictedFollowers, isFollower } from './roles.js';
import { neverSafe, neverSafeMessage, nodeWeight } from './weight-budget.js';
import { nextOpening, isOpen, type WindowSpec } from './windows.js';

export interface RolloutRequest {
  target: RolloutTarget;
  strategy: Strategy;
  nodes?: string[];
  options: RolloutOptions;
}

export interface Plan {
  strategy: Strategy;
  target: RolloutTarget;
  n: number;
  f: number;
  quorum: number;
  maxUnavailable: number;
  fromVersion: string | null;
  path: UpgradePath | null;
  nodes: string[];
  /** Nodes already at the target: they will be skipped. */
  skip: string[];
  waves: string[][];
  idealWaves: number;
  leader: string | null;
  canary: string | null;
  requiresWindow: boolean;
  requiresApproval: boolean;
  window: { name: string; open: boolean; nextOpening: string | null } | null;
  warnings: string[];
  /**
   * By voting weight, when the chain's set is known: the weight each wave
   * takes down and the slack it leaves (largest slack − wave weight, i.e. with
   * every other validator live; the gate re-checks the real slack before each).
   */
  chain: {
    epoch: number;
    totalWeight: number;
    quorumWeight: number;
    largestSlack: number;
    slackNow: number;
    waveWeights: number[];
    slackLeft: number[];
  } | null;
}

function majority(values: (string | null)[]): string | null {
  const counts = new Map<string, number>();
  for (const v of values) if (v) counts.set(v, (counts.get(v) ?? 0) + 1);
  let best: string | null = null;
  let n = 0;
  for (const [v, c] of counts) if (c > n) [best, n] = [v, c];
  return best;
}

export function planRollout(req: RolloutRequest, fleet: FleetView, windows: WindowSpec[], now: number): Plan {
  const warnings: string[] = [];
  const all = [...fleet.nodes.keys()].sort();
  const nodes = req.nodes && req.nodes.length > 0 ? [...new Set(req.nodes)] : all;
  for (const id of nodes) {
    if (!fleet.nodes.has(id)) throw new CodedError('E_NOT_FOUND', `node ${id} is not registered`, { field: 'nodes' });
  }
  if (nodes.length === 0) throw new CodedError('E_NOT_FOUND', 'no registered nodes to upgrade', { field: 'nodes' });
  const n = fleet.n;
  const f = faultTolerance(n);
  const opts = req.options;

  const versions = nodes.map((id) => fleet.nodes.get(id)!.version);
  const fromVersion = majority(versions);
  let path: UpgradePath | null = null;
  const skip: string[] = [];
  for (const id of nodes) {
    const v = fleet.nodes.get(id)!.version;
    if (v === null) {
      warnings.push(`${id}: version unknown (agent not connected yet)`);
      continue;
    }
    try {
      const p = upgradePath(v, req.target.version, { allowDowngrade: opts.allowDowngrade });
      if (!path || p.kind === 'major') path = p;
    } catch (err) {
      if (err instanceof CodedError && err.code === 'E_SAME_VERSION') {
        skip.push(id);
        continue;
      }
      throw err instanceof CodedError ? new CodedError(err.code, `${id}: ${err.message}`, { field: 'target.version' }) : err;
    }
  }
  // Nothing to upgrade: refused rather than created, so a finished rollout's double (a retried
  // request, a script run twice) cannot sit in the list as if it did something.
  if (skip.length === nodes.length) {
    throw new CodedError(
      'E_ALREADY_AT_TARGET',
      `${nodes.length === 1 ? `node ${nodes[0]}` : `all ${nodes.length} nodes`} of the rollout already run${nodes.length === 1 ? 's' : ''} ${req.target.version}`,
      { field: 'target.version' },
    );
  }
  const requiresWindow = path?.requiresWindow ?? false;
  if (path?.kind === 'major' && req.strategy !== 'halt') {
    throw new CodedError('E_MAJOR_NOT_APPROVED', `${path.from} -> ${path.to} is a major upgrade with downtime: use strategy "halt"`, { field: 'strategy' });
  }
  if (requiresWindow && !opts.window) {
    throw new CodedError('E_MAJOR_NOT_APPROVED', 'a major upgrade must name a maintenance window', { field: 'options.window' });
  }
  let win: Plan['window'] = null;
  if (opts.window) {
    const w = windows.find((x) => x.name === opts.window);
    if (!w) throw new CodedError('E_NOT_FOUND', `no maintenance window named ${opts.window}`, { field: 'options.window' });
    const next = nextOpening(w, now);
    win = { name: w.name, open: isOpen(w, now), nextOpening: next ? new Date(next).toISOString() : null };
  }
  const requiresApproval = opts.requireApproval || requiresWindow;

  // A follower the chain shows to be a validator is not upgraded on its registration alone.
  const contradicted = contradictedFollowers(fleet, nodes);
  if (contradicted.length > 0) throw new CodedError('E_FOLLOWER_IS_VALIDATOR', contradicted.map((c) => c.why).join('; '), { field: 'nodes' });
  const followers = nodes.filter((id) => isFollower(fleet, id));
  const todoValidators = nodes.filter((id) => !skip.includes(id) && !followers.includes(id));

  let maxUnavailable = opts.maxUnavailable;
  const chain = fleet.chain && fleet.chain.status === 'adopted' ? fleet.chain : null;
  if (chain && req.strategy !== 'halt') {
    // Waiting helps a slack that is low for now; a validator heavier than the largest slack never fits.
    const offenders = neverSafe(
      chain,
      nodes.filter((id) => !skip.includes(id)),
    );
    if (offenders.length > 0) throw new CodedError('E_DISRUPTION_BUDGET', neverSafeMessage(chain, offenders), { field: 'strategy' });
  }
  // The budget bounds validators only: a rollout of followers alone needs no f.
  if (req.strategy !== 'halt' && todoValidators.length > 0) {
    if (f === 0 && !chain) {
      throw new CodedError('E_DISRUPTION_BUDGET', `${n} validators tolerate no node down (f = 0); use strategy "halt" in a window`, { field: 'strategy' });
    }
    if (maxUnavailable > f) {
      throw new CodedError('E_DISRUPTION_BUDGET', `maxUnavailable ${maxUnavailable} exceeds f = ${f} for n = ${n}`, { field: 'options.maxUnavailable' });
    }
  }
  maxUnavailable = Math.max(1, maxUnavailable);

  const leader = fleet.leader && nodes.includes(fleet.leader) ? fleet.leader : null;
  let canary: string | null = null;
  const todo = nodes.filter((id) => !skip.includes(id));
  const waves: string[][] = [];
  if (req.strategy === 'halt') {
    if (todo.length > 0) waves.push(todo);
  } else {
    let rest = todo.filter((id) => id !== leader);
    if (req.strategy === 'canary') {
      // By default the canary is a validator: it proves the build in consensus, which a follower cannot.
      canary = opts.canary ?? rest.find((id) => !followers.includes(id)) ?? rest[0] ?? todo[0] ?? null;
      if (opts.canary && !nodes.includes(opts.canary)) {
        throw new CodedError('E_NOT_FOUND', `canary ${opts.canary} is not part of the rollout`, { field: 'options.canary' });
      }
      if (canary && skip.includes(canary)) {
        throw new CodedError('E_SAME_VERSION', `canary ${canary} already runs ${req.target.version}`, { field: 'options.canary' });
      }
      if (canary) waves.push([canary]);
      rest = rest.filter((id) => id !== canary);
    }
    // Followers first, in waves of their own outside the budget (see dispatchFollowers in sequencer.ts).
    const restFollowers = rest.filter((id) => followers.includes(id));
    for (let i = 0; i < restFollowers.length; i += maxUnavailable) waves.push(restFollowers.slice(i, i + maxUnavailable));
    rest = rest.filter((id) => !followers.includes(id));
    if (chain) waves.push(...packByWeight(rest, maxUnavailable, Math.max(0, chain.largestSlack - chain.margin), (id) => nodeWeight(chain, id) ?? 0));
    else for (let i = 0; i < rest.length; i += maxUnavailable) waves.push(rest.slice(i, i + maxUnavailable));
    if (leader && todo.includes(leader) && leader !== canary) waves.push([leader]);
    if (leader) warnings.push(`${leader} leads now; leadership rotates, so the leader is re-checked before each node`);
  }
  const disconnected = nodes.filter((id) => !fleet.nodes.get(id)!.connected);
  if (disconnected.length) warnings.push(`not connected: ${disconnected.join(', ')}`);
  return {
    strategy: req.strategy,
    target: req.target,
    n,
    f,
    quorum: quorumSize(n),
    maxUnavailable,
    fromVersion,
    path,
    nodes,
    skip,
    waves,
    idealWaves: req.strategy === 'halt' || n === 0 ? 1 : idealWaves(n, maxUnavailable),
    leader,
    canary,
    requiresWindow,
    requiresApproval,
    window: win,
    warnings,
    chain: chain
      ? (() => {
          const waveWeights = waves.map((w) => w.reduce((sum, id) => sum + (nodeWeight(chain, id) ?? 0), 0));
          return {
            epoch: chain.epoch,
            totalWeight: chain.totalWeight,
            quorumWeight: chain.quorumWeight,
            largestSlack: chain.largestSlack,
            slackNow: chain.slack,
            waveWeights,
            slackLeft: waveWeights.map((w) => chain.largestSlack - w),
          };
        })()
      : null,
  };
}

/**
 * Waves of at most `count` nodes whose weights add up to at most `slack`, in order: a heavy
 * validator that fills the slack alone gets a wave of its own.
 */
function packByWeight(ids: string[], count: number, slack: number, weight: (id: string) => number): string[][] {
  const waves: string[][] = [];
  let wave: string[] = [];
  let used = 0;
  for (const id of ids) {
    const w = weight(id);
    if (wave.length > 0 && (wave.length >= count || used + w > slack)) {
      waves.push(wave);
      wave = [];
      used = 0;
    }
    wave.push(id);
    used += w;
  }
  if (wave.length > 0) waves.push(wave);
  return waves;
}
