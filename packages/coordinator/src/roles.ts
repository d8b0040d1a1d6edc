/**
 * Node roles. A validator is in the chain's set: it votes, and taking it down
 * spends the safety budget. A follower is a full node outside the set (it
 * serves the API, e.g. behind a proxy): it never votes, so taking it down costs
 * the chain nothing, and it is never bound to a chain validator.
 *
 * The role comes from the operator's registration, and the agent's own config
 * must say the same (else its hello is refused, E_ROLE_MISMATCH). Neither is
 * trusted against the chain: what the chain finalizes is the fact. A node
 * registered as a follower whose key is in the validator set, or whose node
 * says it leads, is a validator in truth. It then counts as one everywhere
 * (its weight is in the budget) and is never upgraded as a follower
 * (E_FOLLOWER_IS_VALIDATOR).
 */
import type { ChainView } from './engine/chain-view.js';
import type { FleetView, NodeView } from './model.js';

/**
 * Why the chain contradicts a node registered as a follower, or null when it
 * does not (or the node is registered as a validator).
 */
export function followerContradiction(node: Pick<NodeView, 'id' | 'role' | 'isLeader' | 'view'>, chain: ChainView | null | undefined): string | null {
  if (node.role !== 'follower') return null;
  const v = chain?.byNode.get(node.id);
  if (v && chain)
    return `node ${node.id} is registered as a follower, but its key ${v.pubkey.slice(0, 16)}… is validator ${v.name} (weight ${v.weight}) of epoch ${chain.epoch}`;
  if (node.isLeader) return `node ${node.id} is registered as a follower, but its node says it leads view ${node.view ?? '?'}`;
  return null;
}

/** A follower the chain does not contradict: outside n, f and the budget. */
export function isFollower(fleet: Pick<FleetView, 'nodes' | 'chain'>, nodeId: string): boolean {
  const n = fleet.nodes.get(nodeId);
  return n?.role === 'follower' && followerContradiction(n, fleet.chain) == null;
}

/** The nodes registered as followers that the chain shows to be validators, with why. */
export function contradictedFollowers(fleet: Pick<FleetView, 'nodes' | 'chain'>, ids?: readonly string[]): { nodeId: string; why: string }[] {
  const out: { nodeId: string; why: string }[] = [];
  for (const id of ids ?? [...fleet.nodes.keys()]) {
    const n = fleet.nodes.get(id);
    const why = n ? followerContradiction(n, fleet.chain) : null;
    if (why) out.push({ nodeId: id, why });
  }
  return out;
}
