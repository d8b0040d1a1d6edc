/**
 * The chain's own rules, in the one place the coordinator, the simulator and
 * any simulation take them from (crates/guts-consensus, validator.rs):
 *
 * - quorum_weight = ceil(2/3 × total weight of the active validators);
 * - the leader of view v is the validator at index v mod k among the k active
 *   validators, in the order /api/consensus/validators lists them;
 * - a view whose leader is down produces no block (it is skipped, not handed on).
 *
 * On top of them, the evidence this project reads from finalized blocks: a
 * validator whose own latest leader view produced a finalized block is live;
 * one whose latest leader view has no finalized block skipped it and is not
 * proven live. Nothing here depends on signature counts, so certificates that
 * carry exactly the quorum never stall the rule.
 */

export interface ChainValidator {
  name: string;
  /** Public key in hex: the validator's identity on the chain. */
  pubkey: string;
  weight: number;
  active: boolean;
}

/** The validator set as /api/consensus/validators reports it. */
export interface ValidatorSet {
  epoch: number;
  totalWeight: number;
  quorumWeight: number;
  validators: ChainValidator[];
}

/** A finalized block, reduced to what the liveness rule reads. */
export interface FinalizedBlock {
  height: number;
  blockId: string;
  view: number;
  /** The view leader's public key in hex. */
  producer: string;
  signatureCount: number | null;
}

function assertWeight(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0) throw new RangeError(`${name} must be a non-negative integer, got ${value}`);
}

/** The validators that vote and lead, in the chain's order. */
export function activeValidators(validators: readonly ChainValidator[]): ChainValidator[] {
  return validators.filter((v) => v.active);
}

/** Total weight of the active validators. */
export function activeWeight(validators: readonly ChainValidator[]): number {
  let sum = 0;
  for (const v of validators) {
    assertWeight(`weight of ${v.name}`, v.weight);
    if (v.active) sum += v.weight;
  }
  return sum;
}

/** ceil(2/3 × w), in integers: (2w + 2) div 3. */
export function quorumWeightFor(weight: number): number {
  assertWeight('weight', weight);
  return Math.floor((2 * weight + 2) / 3);
}

/** The leader of `view`: index view mod k among the k active validators; null with none active. */
export function leaderOfView(view: number, validators: readonly ChainValidator[]): ChainValidator | null {
  assertWeight('view', view);
  const active = activeValidators(validators);
  if (active.length === 0) return null;
  return active[view % active.length] ?? null;
}

/**
 * The largest weight the set can ever have down while it still finalizes:
 * active weight − quorum weight. A validator heavier than this can never be
 * taken down by a rolling upgrade; only a halt in a window can upgrade it.
 *
 * Example: weights 4,1,1,1,1,1,1,1,1,1 → active 13, quorum ceil(26/3) = 9,
 * largest slack 13 − 9 = 4: the weight-4 validator may go down, but alone.
 */
export function largestSlack(set: Pick<ValidatorSet, 'validators' | 'quorumWeight'>): number {
  return activeWeight(set.validators) - set.quorumWeight;
}

/**
 * Slack right now: the weight proven up beyond the quorum. Negative means the
 * chain cannot be shown to finalize with what is proven live.
 */
export function slackOf(set: Pick<ValidatorSet, 'validators' | 'quorumWeight'>, provenLive: ReadonlySet<string>): number {
  let live = 0;
  for (const v of set.validators) if (v.active && provenLive.has(v.pubkey)) live += v.weight;
  return live - set.quorumWeight;
}

/** Weight of the named validators (by public key) among the active ones. */
export function weightOf(validators: readonly ChainValidator[], pubkeys: Iterable<string>): number {
  const wanted = new Set(pubkeys);
  let sum = 0;
  for (const v of validators) if (v.active && wanted.has(v.pubkey)) sum += v.weight;
  return sum;
}

/**
 * How many reports must agree before the coordinator believes a figure no
 * one report can prove: f + 1 with f = floor((k − 1) / 3) over the k active
 * validators, so at least one of them is honest when at most f lie.
 */
export function reportersNeeded(validators: readonly ChainValidator[]): number {
  const k = activeValidators(validators).length;
  return k === 0 ? 1 : Math.floor((k - 1) / 3) + 1;
}

/**
 * The value at least `k` of the reports reach: the k-th highest. With fewer
 * reports than k, the lowest (the one all of them reach). Null with none.
 * One report of 10^12 therefore moves nothing while k ≥ 2.
 */
export function reachedByAtLeast(values: readonly number[], k: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => b - a);
  const index = Math.min(Math.max(1, k), sorted.length) - 1;
  return sorted[index] ?? null;
}

export type LivenessVerdict = 'produced' | 'skipped' | 'no-turn' | 'inactive';

export interface Liveness {
  pubkey: string;
  name: string;
  live: boolean;
  verdict: LivenessVerdict;
  /** The validator's latest leader view within the blocks' views, when it had one. */
  view: number | null;
  /** The finalized block it produced in that view, when it did. */
  height: number | null;
  /** One line for an operator: what the chain shows. */
  evidence: string;
}

/**
 * Liveness of each validator from a run of finalized blocks without height
 * gaps (a gap in heights is missing data; a gap in views is a skipped view).
 * Views min..max of the run are known: a view in that range with no block was
 * skipped. Each active validator's latest leader view in the range decides.
 *
 * Example: 4 validators A,B,C,D; blocks at views 8 (A), 9 (B), 11 (D). C's
 * latest turn ≤ 11 is view 10 (10 mod 4 = 2): no block → C skipped, not live.
 */
export function livenessFromBlocks(validators: readonly ChainValidator[], blocks: readonly FinalizedBlock[]): Map<string, Liveness> {
  const out = new Map<string, Liveness>();
  const active = activeValidators(validators);
  const byView = new Map<number, FinalizedBlock>();
  let vmin = Infinity;
  let vmax = -Infinity;
  for (const b of blocks) {
    if (!byView.has(b.view) || (byView.get(b.view)?.height ?? 0) < b.height) byView.set(b.view, b);
    vmin = Math.min(vmin, b.view);
    vmax = Math.max(vmax, b.view);
  }
  for (const v of validators) {
    if (!v.active) {
      out.set(v.pubkey, { pubkey: v.pubkey, name: v.name, live: false, verdict: 'inactive', view: null, height: null, evidence: 'inactive in this epoch' });
    }
  }
  const k = active.length;
  active.forEach((v, i) => {
    const turn = blocks.length === 0 ? -1 : vmax - ((((vmax - i) % k) + k) % k);
    if (turn < vmin || turn < 0) {
      const range = blocks.length === 0 ? 'no finalized blocks seen' : `no turn as leader in views ${vmin}..${vmax}`;
      out.set(v.pubkey, { pubkey: v.pubkey, name: v.name, live: false, verdict: 'no-turn', view: null, height: null, evidence: range });
      return;
    }
    const block = byView.get(turn);
    if (block && block.producer === v.pubkey) {
      out.set(v.pubkey, {
        pubkey: v.pubkey,
        name: v.name,
        live: true,
        verdict: 'produced',
        view: turn,
        height: block.height,
        evidence: `produced block ${block.height} in its view ${turn}`,
      });
    } else {
      const why = block ? `view ${turn} was finalized with producer ${block.producer.slice(0, 12)}…, not this validator` : `skipped its leader view ${turn}`;
      out.set(v.pubkey, { pubkey: v.pubkey, name: v.name, live: false, verdict: 'skipped', view: turn, height: null, evidence: why });
    }
  });
  return out;
}

/**
 * The longest run of blocks without a height gap that ends at the highest
 * height: the only stretch whose missing views are known to be skipped.
 */
export function contiguousTail(blocks: Iterable<FinalizedBlock>): FinalizedBlock[] {
  const byHeight = new Map<number, FinalizedBlock>();
  let top = -Infinity;
  for (const b of blocks) {
    byHeight.set(b.height, b);
    top = Math.max(top, b.height);
  }
  const run: FinalizedBlock[] = [];
  for (let h = top; byHeight.has(h); h--) run.push(byHeight.get(h) as FinalizedBlock);
  return run.reverse();
}
