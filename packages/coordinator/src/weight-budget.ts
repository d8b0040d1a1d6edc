/**
 * The disruption budget in the chain's own unit: voting weight.
 *
 * A set of validators may be down together only if the weight still up and
 * proven live is at least quorum_weight. "Proven live" is the chain's
 * evidence (a block finalized in the validator's own latest leader view),
 * and for a validator this coordinator manages also a healthy node that is
 * not in the middle of a command. Validators nobody here manages count as
 * down unless the chain shows them live.
 *
 * Worked example (docs/chain-safety.md has more): weights 4,1,1,1,1,1,1,1,1,1,
 * total 13, quorum ceil(2/3 × 13) = 9, all proven live:
 *   slack = live 13 − quorum 9 = 4
 *   the weight-4 validator fits (4 ≤ 4) but only alone; afterwards slack 0;
 *   three weight-1 validators fit together (3 ≤ 4), the heavy one then not (4 > 1).
 */
import type { ChainValidatorView, ChainView } from './engine/chain-view.js';

export interface WeightBudget {
  /** Weight proven live and not in flight, minus the quorum weight, minus the margin. */
  slack: number;
  /** The validators that do not count as live right now, and why. */
  notLive: ChainValidatorView[];
}

/** The slack left once the in-flight nodes are counted down, and the margin kept. */
export function weightBudget(chain: ChainView, inFlight: ReadonlySet<string>, margin: number): WeightBudget {
  let live = 0;
  const notLive: ChainValidatorView[] = [];
  for (const v of chain.validators) {
    if (!v.active) continue;
    const flying = v.managedBy != null && inFlight.has(v.managedBy);
    if (v.live && !flying) live += v.weight;
    else notLive.push(v);
  }
  return { slack: live - chain.quorumWeight - margin, notLive };
}

/**
 * One line for an operator on why dispatch waits, e.g.
 * "network slack 1 < needed 2: 3 validators not proven live (2 unmanaged): v7 skipped its leader view 41, …".
 */
export function slackShortfall(budget: WeightBudget, needed: number, margin: number): string {
  const unmanaged = budget.notLive.filter((v) => !v.managedBy).length;
  const sample = budget.notLive
    .slice(0, 4)
    .map((v) => `${v.name}${v.managedBy ? ` (${v.managedBy})` : ''}: ${v.evidence}`)
    .join('; ');
  const more = budget.notLive.length > 4 ? `; and ${budget.notLive.length - 4} more` : '';
  const marginNote = margin > 0 ? ` (margin ${margin} kept)` : '';
  return `network slack ${budget.slack} < needed ${needed}${marginNote}: ${budget.notLive.length} validator(s) not proven live (${unmanaged} unmanaged)${budget.notLive.length ? `: ${sample}${more}` : ''}`;
}

/** The weight a node's validator carries; null when the node is not bound to a validator of the set. */
export function nodeWeight(chain: ChainView, nodeId: string): number | null {
  return chain.byNode.get(nodeId)?.weight ?? null;
}

/**
 * Nodes whose validator alone is heavier than the largest slack the set can
 * ever have: a rolling upgrade can never take them down.
 */
export function neverSafe(chain: ChainView, nodeIds: readonly string[]): { nodeId: string; validator: ChainValidatorView }[] {
  const out: { nodeId: string; validator: ChainValidatorView }[] = [];
  for (const id of nodeIds) {
    const v = chain.byNode.get(id);
    if (v && v.weight > chain.largestSlack) out.push({ nodeId: id, validator: v });
  }
  return out;
}

/** What the operator can do about a node too heavy to take down: for an upgrade, and for undoing one. */
const NEVER_SAFE_NEXT = {
  upgrade: 'upgrade with the halt strategy inside a maintenance window',
  rollback:
    'roll it back by hand inside a maintenance window (guts-upgrade-agent rollback on its host), or resume the rollout once a new epoch gives the set more slack',
} as const;

export function neverSafeMessage(
  chain: ChainView,
  offenders: { nodeId: string; validator: ChainValidatorView }[],
  action: keyof typeof NEVER_SAFE_NEXT = 'upgrade',
): string {
  const list = offenders.map((o) => `${o.nodeId} (validator ${o.validator.name}, weight ${o.validator.weight})`).join(', ');
  return `${list} can never be taken down while the chain finalizes: the largest slack of epoch ${chain.epoch} is ${chain.largestSlack} (total ${chain.totalWeight} − quorum ${chain.quorumWeight}); ${NEVER_SAFE_NEXT[action]}`;
}
