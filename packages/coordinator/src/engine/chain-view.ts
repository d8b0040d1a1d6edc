/**
 * The chain as the coordinator may believe it. Every agent's report is a
 * claim; a figure is believed only when enough reports agree:
 *
 * - the validator set is adopted when the healthy nodes' reports of it agree,
 *   at least f + 1 of them (f from the last adopted set), or on an operator's
 *   confirmation when fewer managed validators report than that;
 * - a finalized block is believed when f + 1 nodes reported it identically (or
 *   all reporting nodes, when fewer report);
 * - liveness comes from the believed blocks by the chain's own rule
 *   (protocol/chain.ts); the reference height and the current view are the
 *   values at least f + 1 reports reach, and the leader follows from the view.
 *
 * So one lying agent moves nothing but what its own weight counts for.
 */
import { createHash } from 'node:crypto';
import {
  type ChainReport,
  type FinalizedBlock,
  type ValidatorSet,
  contiguousTail,
  largestSlack,
  leaderOfView,
  livenessFromBlocks,
  reachedByAtLeast,
  reportersNeeded,
  slackOf,
} from '@guts-upgrade/protocol';
import type { NodeView } from '../model.js';

/** Believed blocks kept below the top: enough for many leader rotations of a large set. */
const BLOCK_HISTORY = 2048;

export type ChainStatus = 'adopted' | 'unconfirmed' | 'disagreement';

export interface ChainValidatorView {
  name: string;
  pubkey: string;
  weight: number;
  active: boolean;
  /** The registered node bound to this validator, if this coordinator manages it. */
  managedBy: string | null;
  /** Proven live by the chain (and, when managed, its node healthy). */
  live: boolean;
  verdict: string;
  evidence: string;
  /** When the block that proves it live was first believed (coordinator time). */
  provenAt: number | null;
  /** The view of that block: the chain's own clock, which a late belief cannot move. */
  provenView: number | null;
}

export interface ChainAlert {
  code: string;
  message: string;
  nodeId?: string;
}

export interface ChainView {
  status: ChainStatus;
  epoch: number;
  totalWeight: number;
  quorumWeight: number;
  /** Active weight − quorum weight: the most that can ever be down at once. */
  largestSlack: number;
  /** Weight proven live now minus the quorum weight (in-flight nodes not yet subtracted). */
  slack: number;
  validators: ChainValidatorView[];
  /** Node id → its validator, for the nodes bound to a validator of this set. */
  byNode: Map<string, ChainValidatorView>;
  /** How many agreeing reports the coordinator needs before it believes a figure (f + 1). */
  reportersNeeded: number;
  /** The view at least f + 1 healthy reporters reach. */
  agreedView: number | null;
  leaderPubkey: string | null;
  /** The finalized height at least f + 1 healthy reporters reach. */
  referenceHeight: number | null;
  alerts: ChainAlert[];
  /** Weight kept in reserve beyond the quorum before a dispatch (config chain.slackMargin). */
  margin: number;
  /** An upgraded node counts as back only after it produced a block in its own leader view. */
  requireProducedBlock: boolean;
}

/** The rules the coordinator's config sets for the chain view. */
export interface ChainRules {
  slackMargin: number;
  requireProducedBlock: boolean;
}

interface Candidate {
  block: FinalizedBlock;
  reporters: Set<string>;
  believedAt: number | null;
}

/** A stable digest of a set, so "these reports agree" is a string comparison. */
export function setDigest(set: ValidatorSet): string {
  const canon = JSON.stringify([set.epoch, set.quorumWeight, set.validators.map((v) => [v.pubkey.toLowerCase(), v.weight, v.active])]);
  return createHash('sha256').update(canon).digest('hex').slice(0, 16);
}

export interface ChainPersistence {
  load(): { adopted: string | null; confirmedDigest: string | null };
  save(adopted: string | null, confirmedDigest: string | null): void;
}

export interface ChainViewInput {
  nodes: ReadonlyMap<string, NodeView>;
  /** Node id → bound public key (hex, lower case). */
  bindings: ReadonlyMap<string, string>;
  /**
   * Nodes registered as followers: not validators, so never expected to be bound, and not
   * among the reporters whose agreement makes a figure believed (f + 1 counts validators).
   */
  followers?: ReadonlySet<string>;
  now: number;
  rules?: ChainRules;
}

/**
 * Keeps what the agents said about the chain between heartbeats (the sets
 * they report, the blocks they saw) and turns it into a ChainView. Nothing
 * here reads a clock or a socket: the hub feeds it, the fleet view asks it.
 */
export class ChainTracker {
  private readonly sets = new Map<string, { set: ValidatorSet; digest: string }>();
  private readonly blocks = new Map<number, Map<string, Candidate>>();
  private adopted: ValidatorSet | null = null;
  private adoptedDigest: string | null = null;
  private confirmedDigest: string | null = null;
  private top = -1;
  /** Nodes that sent a chain report with their last status: the believers' pool. */
  private readonly reporting = new Set<string>();

  constructor(private readonly persistence: ChainPersistence | null = null) {
    const saved = persistence?.load();
    if (saved?.adopted) {
      this.adopted = JSON.parse(saved.adopted) as ValidatorSet;
      this.adoptedDigest = setDigest(this.adopted);
    }
    this.confirmedDigest = saved?.confirmedDigest ?? null;
  }

  /** Whether any agent has ever reported the chain (else the fleet is counted the old way). */
  get known(): boolean {
    return this.adopted != null || this.sets.size > 0;
  }

  /** The set adopted last, if any. */
  get set(): ValidatorSet | null {
    return this.adopted;
  }

  /** The digest of the set most managed nodes report now (what an operator would confirm). */
  reportedDigests(): Map<string, { set: ValidatorSet; nodes: string[] }> {
    const out = new Map<string, { set: ValidatorSet; nodes: string[] }>();
    for (const [node, r] of this.sets) {
      const g = out.get(r.digest) ?? { set: r.set, nodes: [] };
      g.nodes.push(node);
      out.set(r.digest, g);
    }
    return out;
  }

  /** An operator's confirmation of a reported set, needed when too few managed validators report it. */
  confirm(digest: string): ValidatorSet | null {
    const g = this.reportedDigests().get(digest);
    if (!g) return null;
    this.confirmedDigest = digest;
    this.adoptSet(g.set, digest);
    return g.set;
  }

  /** One agent's chain report, with its latest status. */
  observe(nodeId: string, report: ChainReport | undefined, now: number): void {
    if (!report) {
      this.reporting.delete(nodeId);
      return;
    }
    this.reporting.add(nodeId);
    if (report.validators) {
      const set: ValidatorSet = {
        epoch: report.validators.epoch,
        totalWeight: report.validators.totalWeight,
        quorumWeight: report.validators.quorumWeight,
        validators: report.validators.validators.map((v) => ({ ...v, pubkey: v.pubkey.toLowerCase() })),
      };
      this.sets.set(nodeId, { set, digest: setDigest(set) });
    }
    const need = this.blockBelievers();
    for (const b of report.blocks) {
      if (b.height <= this.top - BLOCK_HISTORY) continue;
      const block: FinalizedBlock = { ...b, producer: b.producer.toLowerCase() };
      const key = `${block.blockId}|${block.view}|${block.producer}`;
      const at = this.blocks.get(block.height) ?? new Map<string, Candidate>();
      this.blocks.set(block.height, at);
      const c = at.get(key) ?? { block, reporters: new Set<string>(), believedAt: null };
      c.reporters.add(nodeId);
      at.set(key, c);
      if (c.believedAt == null && c.reporters.size >= need) c.believedAt = now;
      if (c.believedAt != null) this.top = Math.max(this.top, block.height);
    }
    for (const h of this.blocks.keys()) if (h <= this.top - BLOCK_HISTORY) this.blocks.delete(h);
  }

  /** A node gone: its claims about the set no longer count towards agreement. */
  forget(nodeId: string): void {
    this.sets.delete(nodeId);
    this.reporting.delete(nodeId);
  }

  /** Reports that must agree on a block: f + 1, or every reporting node when fewer report. */
  private blockBelievers(): number {
    const need = this.adopted ? reportersNeeded(this.adopted.validators) : 1;
    return Math.max(1, Math.min(need, this.reporting.size));
  }

  private adoptSet(set: ValidatorSet, digest: string): void {
    if (digest === this.adoptedDigest) return;
    const changed = this.adopted != null;
    this.adopted = set;
    this.adoptedDigest = digest;
    // Blocks were judged under the old order of leaders; under a new set they prove nothing.
    if (changed) this.blocks.clear();
    this.top = -1;
    this.persistence?.save(JSON.stringify(set), this.confirmedDigest);
  }

  /**
   * Adopts the set the healthy reporters agree on: at least f + 1 of them
   * (f from the last adopted set, else from the reported set itself), or the
   * set the operator confirmed.
   */
  private adopt(healthy: ReadonlySet<string>): { disagreeing: string[]; unconfirmed: ValidatorSet | null } {
    const groups = new Map<string, { set: ValidatorSet; nodes: string[] }>();
    for (const [node, r] of this.sets) {
      if (!healthy.has(node)) continue;
      const g = groups.get(r.digest) ?? { set: r.set, nodes: [] };
      g.nodes.push(node);
      groups.set(r.digest, g);
    }
    let best: { digest: string; set: ValidatorSet; nodes: string[] } | null = null;
    for (const [digest, g] of groups) if (!best || g.nodes.length > best.nodes.length) best = { digest, ...g };
    if (best) {
      const need = reportersNeeded((this.adopted ?? best.set).validators);
      if (best.nodes.length >= need || best.digest === this.confirmedDigest) this.adoptSet(best.set, best.digest);
    }
    const disagreeing: string[] = [];
    for (const [digest, g] of groups) if (digest !== this.adoptedDigest) disagreeing.push(...g.nodes);
    const unconfirmed = !this.adopted && best ? best.set : null;
    return { disagreeing: disagreeing.sort(), unconfirmed };
  }

  /** The believed blocks without a height gap up to the top, and when each became believed. */
  private believedTail(): { blocks: FinalizedBlock[]; believedAt: Map<number, number> } {
    const believed: FinalizedBlock[] = [];
    const believedAt = new Map<number, number>();
    for (const [h, cands] of this.blocks) {
      for (const c of cands.values()) {
        if (c.believedAt == null) continue;
        believed.push(c.block);
        believedAt.set(h, c.believedAt);
        break;
      }
    }
    return { blocks: contiguousTail(believed), believedAt };
  }

  /** The chain as believed now; null when no agent has reported it (the fleet is then counted by nodes). */
  view(input: ChainViewInput): ChainView | null {
    if (!this.known) return null;
    const follower = (id: string) => input.followers?.has(id) === true;
    const healthyReporters = new Set([...input.nodes.values()].filter((n) => n.healthy && this.reporting.has(n.id) && !follower(n.id)).map((n) => n.id));
    const { disagreeing, unconfirmed } = this.adopt(healthyReporters);
    const alerts: ChainAlert[] = [];
    const set = this.adopted;
    if (!set) {
      const have = unconfirmed ? (this.reportedDigests().get(setDigest(unconfirmed))?.nodes.length ?? 0) : 0;
      const need = unconfirmed ? reportersNeeded(unconfirmed.validators) : 1;
      alerts.push({
        code: 'CHAIN_SET_UNCONFIRMED',
        message: unconfirmed
          ? `validator set of epoch ${unconfirmed.epoch} reported by ${have} managed node(s), fewer than the ${need} needed to believe it; confirm it with \`guts-upgrade chain confirm ${setDigest(unconfirmed)}\``
          : 'no healthy node has reported the validator set yet',
      });
      return emptyView(alerts, input.rules, unconfirmed ?? undefined);
    }
    if (disagreeing.length > 0) {
      alerts.push({
        code: 'CHAIN_SET_DISAGREEMENT',
        message: `node(s) ${disagreeing.join(', ')} report a validator set other than the adopted one (epoch ${set.epoch}); dispatch waits until the reports agree`,
      });
    }
    const need = reportersNeeded(set.validators);
    const byPubkey = new Map<string, string>();
    for (const [node, pk] of input.bindings) byPubkey.set(pk, node);
    for (const [node, pk] of input.bindings) {
      // A follower's own key is outside the set by definition (one inside is FOLLOWER_IS_VALIDATOR, see roles.ts).
      if (!follower(node) && !set.validators.some((v) => v.pubkey === pk))
        alerts.push({
          code: 'BINDING_UNKNOWN',
          nodeId: node,
          message: `node ${node} is bound to ${pk.slice(0, 16)}…, which is not a validator of epoch ${set.epoch}`,
        });
    }
    for (const n of input.nodes.values()) {
      if (!input.bindings.has(n.id) && !follower(n.id))
        alerts.push({
          code: 'BINDING_MISSING',
          nodeId: n.id,
          message: `node ${n.id} is not bound to a chain validator: set validatorPubkey in its agent config or register it with --pubkey`,
        });
      const pk = input.bindings.get(n.id);
      // The node's own evidence: when it says it leads, the leader it names is itself.
      if (pk && n.healthy && n.isLeader && n.currentLeader && n.currentLeader.toLowerCase() !== pk) {
        alerts.push({
          code: 'BINDING_MISMATCH',
          nodeId: n.id,
          message: `node ${n.id} leads as ${n.currentLeader.slice(0, 16)}… but is bound to ${pk.slice(0, 16)}…`,
        });
      }
    }
    const { blocks, believedAt } = this.believedTail();
    const liveness = livenessFromBlocks(set.validators, blocks);
    const validators: ChainValidatorView[] = set.validators.map((v) => {
      const l = liveness.get(v.pubkey);
      const managedBy = byPubkey.get(v.pubkey) ?? null;
      const node = managedBy ? input.nodes.get(managedBy) : undefined;
      const nodeDown = managedBy != null && !node?.healthy;
      const live = !!l?.live && !nodeDown;
      const evidence = nodeDown ? `${l?.evidence ?? 'no chain evidence'}; its node ${managedBy} is not healthy` : (l?.evidence ?? 'no chain evidence');
      return {
        name: v.name,
        pubkey: v.pubkey,
        weight: v.weight,
        active: v.active,
        managedBy,
        live,
        verdict: l?.verdict ?? 'no-turn',
        evidence,
        provenAt: l?.height != null ? (believedAt.get(l.height) ?? null) : null,
        provenView: l?.verdict === 'produced' ? l.view : null,
      };
    });
    const byNode = new Map<string, ChainValidatorView>();
    for (const v of validators) if (v.managedBy) byNode.set(v.managedBy, v);
    const healthy = [...input.nodes.values()].filter((n) => n.healthy && !follower(n.id));
    const referenceHeight = reachedByAtLeast(
      healthy.flatMap((n) => (n.finalizedHeight == null ? [] : [n.finalizedHeight])),
      need,
    );
    const agreedView = reachedByAtLeast(
      healthy.flatMap((n) => (n.view == null ? [] : [n.view])),
      need,
    );
    const leaderPubkey = agreedView == null ? null : (leaderOfView(agreedView, set.validators)?.pubkey ?? null);
    contradictions(healthy, input.bindings, set, { referenceHeight, agreedView, top: blocks.at(-1)?.height ?? null }, alerts);
    const live = new Set(validators.filter((v) => v.live).map((v) => v.pubkey));
    return {
      status: disagreeing.length > 0 ? 'disagreement' : 'adopted',
      epoch: set.epoch,
      totalWeight: set.totalWeight,
      quorumWeight: set.quorumWeight,
      largestSlack: largestSlack(set),
      slack: slackOf(set, live),
      validators,
      byNode,
      reportersNeeded: need,
      agreedView,
      leaderPubkey,
      referenceHeight,
      alerts,
      margin: input.rules?.slackMargin ?? 0,
      requireProducedBlock: input.rules?.requireProducedBlock ?? true,
    };
  }
}

/** A view with no adopted set: nothing is believed, nothing may be dispatched. */
function emptyView(alerts: ChainAlert[], rules: ChainRules | undefined, reported?: ValidatorSet): ChainView {
  return {
    status: 'unconfirmed',
    epoch: reported?.epoch ?? 0,
    totalWeight: reported?.totalWeight ?? 0,
    quorumWeight: reported?.quorumWeight ?? 0,
    largestSlack: 0,
    slack: 0,
    validators: [],
    byNode: new Map(),
    reportersNeeded: reported ? reportersNeeded(reported.validators) : 1,
    agreedView: null,
    leaderPubkey: null,
    referenceHeight: null,
    alerts,
    margin: rules?.slackMargin ?? 0,
    requireProducedBlock: rules?.requireProducedBlock ?? true,
  };
}

/**
 * Reports far from what f + 1 others agree on, or a claim to lead a view the
 * chain's rule gives to someone else: an alert naming the node. The figures
 * themselves already ignore them (reachedByAtLeast).
 */
function contradictions(
  healthy: readonly NodeView[],
  bindings: ReadonlyMap<string, string>,
  set: ValidatorSet,
  agreed: { referenceHeight: number | null; agreedView: number | null; top: number | null },
  alerts: ChainAlert[],
): void {
  const k = set.validators.filter((v) => v.active).length;
  // Honest reports differ by what a few heartbeats see: allow a full rotation of views and of blocks.
  const slackViews = 2 * Math.max(k, 1) + 2;
  for (const n of healthy) {
    const why: string[] = [];
    if (agreed.referenceHeight != null && n.finalizedHeight != null && n.finalizedHeight > agreed.referenceHeight + slackViews + 10) {
      why.push(`finalized height ${n.finalizedHeight} far above the ${agreed.referenceHeight} others reach`);
    }
    if (agreed.agreedView != null && n.view != null && n.view > agreed.agreedView + slackViews)
      why.push(`view ${n.view} far above the agreed ${agreed.agreedView}`);
    const pk = bindings.get(n.id);
    if (n.isLeader && n.view != null && pk && leaderOfView(n.view, set.validators)?.pubkey !== pk)
      why.push(`claims to lead view ${n.view}, which the chain's rule gives to another validator`);
    if (why.length > 0) alerts.push({ code: 'CHAIN_REPORT_CONTRADICTS', nodeId: n.id, message: `node ${n.id}: ${why.join('; ')}; its report is not believed` });
  }
}
