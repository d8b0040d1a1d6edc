/**
 * Toy BFT in the shape of Simplex, slowed down so tests can watch it, on the
 * chain's own rules (@guts-upgrade/protocol/chain, as crates/guts-consensus):
 * - the view advances every leader_term_ms (shared genesis_time, shared clock);
 * - the leader of view v is leaderOfView(v): index v mod k among the k active
 *   validators of the current epoch, in the config's order. Nothing hands a
 *   view on: when that validator is down (or not eligible: starting, syncing)
 *   the view produces no block;
 * - the leader proposes a block every block_interval_ms and finalizes it only,
 *   within its own view,
 *   once the votes it holds weigh at least quorumWeightFor(active weight),
 *   its own vote included. The certificate carries exactly the quorum: the
 *   leader's own vote first, then the other votes, heaviest first (ties in
 *   the config's order), only until the weight reaches the quorum weight; the
 *   block's signature_count is the number of votes in that certificate;
 * - each block records the view it was proposed in and its producer (the
 *   leader's public key), so both are the chain's truth;
 * - a validator votes only for the leader of the proposal's view, and for one
 *   block per height and view, as in Simplex: the leader re-sends the same
 *   proposal for as long as its view lasts, so a vote already given still
 *   counts, and a later view's leader may win a vote that an earlier view's
 *   block had, once the voter has asked that earlier leader whether it
 *   finalized its block (a finalized block is taken instead);
 * - peers that are behind pull missing blocks at sync_blocks_per_sec;
 * - a node adopts the highest epoch its peers report (see epoch.ts);
 * - after start() the engine connects to its peers one by one over
 *   p2p_warmup_ms; before start() it is `Starting` and takes no part, and a
 *   peer whose connection has not formed yet is neither polled nor answered
 *   (node-to-node calls name their sender in x-guts-peer).
 * - a follower (role: follower) is none of the validators: it polls them and
 *   pulls their finalized blocks like any node that is behind, but never
 *   leads, proposes or votes, so no quorum ever counts it.
 * Node-to-node traffic is plain HTTP on the API address under /p2p/.
 */
import crypto from 'node:crypto';
import { activeWeight, leaderOfView, quorumWeightFor } from '@guts-upgrade/protocol/chain';
import { type NodeConfig, pubkeyFor, type ValidatorSpec } from './config.js';
import { type Epoch, EpochStore } from './epoch.js';
import type { HistoryWriter } from './history.js';
import type { Logger } from './log.js';
import type { Block, ChainStore } from './storage.js';

export interface PeerStatus {
  name: string;
  ready: boolean;
  syncing: boolean;
  finalized_height: number;
  view: number;
  version: string;
  /** The epoch this node runs (absent from nodes before epochs). */
  epoch?: Epoch;
}

interface PeerState {
  reachable: boolean;
  status: PeerStatus | null;
  lastSeen: number;
}

/** A node more than this many blocks behind its best peer is syncing, not active. */
export const CAUGHT_UP_DISTANCE = 2;

export class Consensus {
  readonly n: number;
  readonly self: ValidatorSpec;
  readonly epochs: EpochStore;
  private readonly peers = new Map<string, PeerState>();
  private timers: NodeJS.Timeout[] = [];
  private polledOnce = false;
  private proposing = false;
  private syncingBusy = false;
  /** The vote this validator gave last: one block per height and view (and who proposed it). */
  private lock: { height: number; view: number; id: string; producer: string } | null = null;
  /** This leader's proposal for (height, view), re-sent unchanged until one of them moves. */
  private pending: Block | null = null;
  pendingTransactions = 0;
  private stopped = false;
  /** Set by start(): before it the engine is `Starting`. */
  private running = false;
  /** When the connection to each peer forms (Infinity: never). */
  private readonly connectAt = new Map<string, number>();
  /** Outside the validator set: pulls finalized blocks, never proposes or votes. */
  readonly follower: boolean;

  constructor(
    private readonly cfg: NodeConfig,
    readonly chain: ChainStore,
    private readonly log: Logger,
    private readonly history: HistoryWriter,
    private readonly isReady: () => boolean,
    private readonly version: string,
    epochs?: EpochStore,
  ) {
    this.n = cfg.validators.length;
    this.epochs = epochs ?? new EpochStore(cfg.validators, null);
    this.follower = cfg.role === 'follower';
    // A follower's own key (its node identity) is in no validator set: weight 0, never a leader.
    this.self = this.follower
      ? { name: cfg.name, pubkey: pubkeyFor(cfg.name), weight: 0, addr: cfg.apiAddr, active: false }
      : cfg.validators.find((v) => v.name === cfg.name)!;
    for (const v of cfg.validators) if (v.name !== cfg.name) this.peers.set(v.name, { reachable: false, status: null, lastSeen: 0 });
    if (this.peers.size === 0) this.polledOnce = true;
  }

  get view(): number {
    return Math.max(0, Math.floor((Date.now() - this.cfg.genesisTime) / this.cfg.sim.leader_term_ms));
  }

  get height(): number {
    return this.chain.height;
  }

  /** Highest finalized height among reachable peers. */
  get bestPeerHeight(): number {
    let best = 0;
    for (const p of this.peers.values()) if (p.reachable && p.status) best = Math.max(best, p.status.finalized_height);
    return best;
  }

  get syncing(): boolean {
    return !this.polledOnce || this.bestPeerHeight - this.height > CAUGHT_UP_DISTANCE;
  }

  get peerCount(): number {
    let c = 0;
    for (const p of this.peers.values()) if (p.reachable) c++;
    return c;
  }

  /** Whether the connection with this peer has formed (false before start()). */
  isConnected(name: string): boolean {
    return this.running && (this.connectAt.get(name) ?? Infinity) <= Date.now();
  }

  /**
   * Whether a node-to-node call from `name` gets an answer: a validator once its
   * connection formed; anyone else (a follower, which dials in) once the engine
   * runs, for reads only, and never by a node that connects to nobody.
   */
  answers(name: string, read: boolean): boolean {
    if (this.peers.has(name)) return this.isConnected(name);
    return read && this.running && this.cfg.sim.p2p_report !== 'isolated';
  }

  get started(): boolean {
    return this.running;
  }

  get state(): string {
    if (!this.isReady() || !this.running) return 'Starting';
    return this.syncing ? 'Syncing' : 'Active';
  }

  /** Total weight of the active validators in the current epoch. */
  get activeWeight(): number {
    return activeWeight(this.epochs.chainValidators());
  }

  /** Weight a certificate needs: ceil(2/3 × active weight). */
  get quorumWeight(): number {
    return quorumWeightFor(this.activeWeight);
  }

  /** The leader of `view` by the chain's rule, up or not (a down leader's view is skipped). */
  leaderOf(view: number): ValidatorSpec | null {
    const l = leaderOfView(view, this.epochs.chainValidators());
    return l ? (this.cfg.validators.find((v) => v.name === l.name) ?? null) : null;
  }

  get leader(): ValidatorSpec | null {
    return this.leaderOf(this.view);
  }

  myStatus(): PeerStatus {
    return {
      name: this.self.name,
      ready: this.isReady() && this.running,
      syncing: this.syncing,
      finalized_height: this.height,
      view: this.view,
      version: this.version,
      epoch: this.epochs.current,
    };
  }

  start(): void {
    if (this.stopped || this.running) return;
    this.running = true;
    const others = this.others();
    const t0 = Date.now();
    others.forEach((v, i) => {
      const at = this.cfg.sim.p2p_report === 'isolated' ? Infinity : t0 + Math.round((this.cfg.sim.p2p_warmup_ms * (i + 1)) / others.length);
      this.connectAt.set(v.name, at);
    });
    // Polling is the main CPU cost of a big local cluster; 100 ms is plenty to notice a peer go.
    const poll = Math.max(100, Math.min(250, this.cfg.sim.block_interval_ms));
    this.timers.push(setInterval(() => void this.pollPeers(), poll));
    this.timers.push(setInterval(() => void this.maybePropose(), this.cfg.sim.block_interval_ms));
    this.timers.push(setInterval(() => void this.syncStep(poll), poll));
    void this.pollPeers();
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }

  private async call<T>(v: ValidatorSpec, path: string, body?: unknown): Promise<T | null> {
    try {
      const res = await fetch(`http://${v.addr}${path}`, {
        method: body === undefined ? 'GET' : 'POST',
        headers: { 'x-guts-peer': this.self.name, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.cfg.sim.p2p_timeout_ms),
      });
      if (!res.ok) {
        await res.body?.cancel();
        return null;
      }
      return (await res.json()) as T;
    } catch {
      return null;
    }
  }

  private others(): ValidatorSpec[] {
    return this.cfg.validators.filter((v) => v.name !== this.self.name);
  }

  private async pollPeers(): Promise<void> {
    await Promise.all(
      this.others().map(async (v) => {
        const st = this.isConnected(v.name) ? await this.call<PeerStatus>(v, '/p2p/status') : null;
        const p = this.peers.get(v.name)!;
        const was = p.reachable;
        p.reachable = st !== null && st.name === v.name;
        p.status = p.reachable ? st : null;
        if (p.reachable) p.lastSeen = Date.now();
        if (was !== p.reachable && !this.stopped) this.log.info(p.reachable ? 'peer connected' : 'peer disconnected', { peer: v.name, peers: this.peerCount });
      }),
    );
    this.polledOnce = true;
    this.adoptPeerEpoch();
  }

  /** A node that missed an epoch change (it was down) takes it from its peers. */
  private adoptPeerEpoch(): void {
    let best: Epoch | null = null;
    for (const p of this.peers.values()) {
      const e = p.reachable ? p.status?.epoch : undefined;
      if (e && e.epoch > (best?.epoch ?? this.epochs.current.epoch)) best = e;
    }
    if (!best) return;
    try {
      if (this.epochs.set(best)) this.log.info('adopted epoch from peers', { epoch: best.epoch, weights: best.weights });
    } catch (e) {
      this.log.warn('peer reports an epoch this node cannot adopt', { error: (e as Error).message });
    }
  }

  private record(b: Block): void {
    this.history.append({ t: Date.now(), height: b.height, view: b.view, leader: b.producer_name, node: this.self.name });
  }

  private commitLocal(b: Block): void {
    this.chain.append(b);
    this.record(b);
    this.log.debug('block finalized', { height: b.height, view: b.view, producer: b.producer_name, signatures: b.signature_count });
  }

  private async maybePropose(): Promise<void> {
    if (this.follower || this.proposing || this.stopped || !this.isReady() || this.syncing) return;
    const view = this.view;
    if (this.leaderOf(view)?.name !== this.self.name) return;
    this.proposing = true;
    try {
      const height = this.height + 1;
      const parent = this.chain.tipId;
      const p = this.pending;
      // A fresh block each round would ask voters for a second vote in the same
      // view, which they refuse: with votes spread over several of one leader's
      // blocks, none reached quorum and a fleet could stall at genesis for 30 s.
      const proposal = p && p.height === height && p.view === view && p.parent_id === parent ? p : this.newProposal(height, parent, view);
      this.pending = proposal;
      const txs = proposal.tx_count;
      this.lock = { height, view, id: proposal.block_id, producer: this.self.name };
      const targets = this.others().filter((v) => this.peers.get(v.name)?.reachable);
      const voters = await this.collectVotes(targets, proposal);
      const cert = this.certificate(voters);
      // Only within its own view: once the view is over, the next leader may already hold the
      // votes for another block at this height, and finalizing this one late would fork the chain
      // (every node then stuck at this height, each side short of a quorum; seen in CI under load).
      if (!cert || this.stopped || this.height + 1 !== height || this.view !== view || this.leaderOf(view)?.name !== this.self.name) {
        this.log.debug('proposal not finalized', { height, view, votes: 1 + voters.length, quorum_weight: this.quorumWeight });
        return;
      }
      const block: Block = { ...proposal, signature_count: cert.length };
      this.pendingTransactions = Math.max(0, this.pendingTransactions - txs);
      this.commitLocal(block);
      await Promise.all(targets.map((v) => this.call(v, '/p2p/commit', block)));
    } finally {
      this.proposing = false;
    }
  }

  /**
   * Asks every target for its vote and returns the voters as soon as they and the leader
   * weigh a quorum (or once every answer is in): one slow or partitioned peer must not hold
   * the block past the leader's view, after which it may no longer finalize it.
   */
  private collectVotes(targets: readonly ValidatorSpec[], proposal: Block): Promise<ValidatorSpec[]> {
    return new Promise((resolve) => {
      const voters: ValidatorSpec[] = [];
      let pending = targets.length;
      if (pending === 0) return resolve(voters);
      for (const v of targets) {
        void this.call<{ ack: boolean }>(v, '/p2p/propose', proposal).then((a) => {
          if (a?.ack === true) voters.push(v);
          pending--;
          if (pending === 0 || this.certificate(voters)) resolve([...voters]);
        });
      }
    });
  }

  /**
   * The smallest certificate from the leader's own vote and these votes:
   * its own first, then the heaviest, until the weight reaches the quorum
   * weight. Null when all of them together do not reach it.
   */
  certificate(voters: readonly ValidatorSpec[]): ValidatorSpec[] | null {
    const need = this.quorumWeight;
    const cert = [this.self];
    let weight = this.epochs.weightOf(this.self.name);
    const order = new Map(this.cfg.validators.map((v, i) => [v.name, i]));
    const rest = voters
      .filter((v) => v.name !== this.self.name && this.epochs.weightOf(v.name) > 0)
      .sort((a, b) => this.epochs.weightOf(b.name) - this.epochs.weightOf(a.name) || order.get(a.name)! - order.get(b.name)!);
    for (const v of rest) {
      if (weight >= need) break;
      cert.push(v);
      weight += this.epochs.weightOf(v.name);
    }
    return weight >= need ? cert : null;
  }

  private newProposal(height: number, parent: string, view: number): Block {
    const txs = this.pendingTransactions;
    const base = { height, parent_id: parent, producer: this.self.pubkey, producer_name: this.self.name, timestamp: Date.now(), tx_count: txs, view };
    const digest = (s: string) => crypto.createHash('sha256').update(s).digest('hex');
    const tx_root = digest(`tx:${height}:${txs}`);
    const state_root = digest(`state:${parent}:${tx_root}`);
    const block_id = digest(JSON.stringify({ ...base, tx_root, state_root }));
    return { ...base, block_id, tx_root, state_root, signature_count: 0 };
  }

  /** A peer asks for our vote on its proposal. */
  async onPropose(b: Block): Promise<boolean> {
    if (!this.votable(b)) return false;
    const l = this.lock;
    if (l && l.height === b.height) {
      if (b.view < l.view) return false; // a leader whose view is over
      if (b.view === l.view && b.block_id !== l.id) return false; // one vote per view
      if (b.view > l.view && b.block_id !== l.id && l.producer !== this.self.name) {
        // We voted for another block at this height in an earlier view: its leader may have
        // finalized it, its commit still on the way. Ask it first; a finalized block wins.
        const earlier = this.cfg.validators.find((v) => v.name === l.producer);
        const got = earlier ? await this.call<Block[]>(earlier, `/p2p/blocks?from=${b.height}&limit=1`) : null;
        const done = got?.[0];
        if (done && done.height === this.height + 1 && done.parent_id === this.chain.tipId) {
          this.commitLocal(done);
          return false;
        }
        if (!this.votable(b)) return false; // the chain moved while we asked
      }
    }
    this.lock = { height: b.height, view: b.view, id: b.block_id, producer: b.producer_name };
    return true;
  }

  /** Whether a proposal could get our vote at all: we take part, it extends our tip, its view's leader sent it. */
  private votable(b: Block): boolean {
    if (this.follower || !this.isReady() || !this.running || this.syncing) return false;
    if (b.height !== this.height + 1 || b.parent_id !== this.chain.tipId) return false;
    return b.producer === this.leaderOf(b.view)?.pubkey; // only the view's leader proposes
  }

  /** A finalized block from its leader; gaps are filled by the sync loop. */
  onCommit(b: Block): void {
    if (b.height === this.height + 1 && b.parent_id === this.chain.tipId) this.commitLocal(b);
  }

  blocksFrom(from: number, limit: number): Block[] {
    return this.chain.blocks.slice(Math.max(0, from - 1), Math.max(0, from - 1) + limit);
  }

  private async syncStep(pollMs: number): Promise<void> {
    if (this.syncingBusy || this.stopped || !this.isReady()) return;
    let best: ValidatorSpec | null = null;
    let bestH = this.height;
    for (const v of this.others()) {
      const p = this.peers.get(v.name)!;
      if (p.reachable && p.status && p.status.finalized_height > bestH) {
        best = v;
        bestH = p.status.finalized_height;
      }
    }
    // Even a gap of one is pulled: a lost commit message must not leave this
    // node one block behind forever (it could then never vote again).
    if (!best || bestH <= this.height) return;
    this.syncingBusy = true;
    try {
      const budget = Math.max(1, Math.floor((this.cfg.sim.sync_blocks_per_sec * pollMs) / 1000));
      const from = this.height + 1;
      const blocks = await this.call<Block[]>(best, `/p2p/blocks?from=${from}&limit=${budget}`);
      if (!blocks) return;
      for (const b of blocks) {
        if (b.height !== this.height + 1) break;
        if (b.parent_id !== this.chain.tipId) this.log.warn('synced block does not extend our tip', { height: b.height });
        this.commitLocal(b);
      }
      const gap = this.bestPeerHeight - this.height;
      if (gap <= CAUGHT_UP_DISTANCE && blocks.length > CAUGHT_UP_DISTANCE) this.log.info('caught up with peers', { finalized_height: this.height });
    } finally {
      this.syncingBusy = false;
    }
  }
}
