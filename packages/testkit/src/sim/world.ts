/**
 * One deterministic simulation run: the real coordinator (its sequencer, rollout
 * loop, agent hub and SQLite store on a real file) driven by virtual time, with
 * simulated agents and nodes speaking the real protocol messages in memory, and
 * a simulated chain following the rules of @guts-upgrade/protocol/chain. Every
 * choice comes from one seeded Rng, so a seed replays exactly.
 *
 * The agent hub is fed through its own entry point (handleAgent) with an
 * in-memory socket: the same decoding, authentication, binding and message
 * handling as a real websocket, no network.
 */
import { EventEmitter } from 'node:events';
import { copyFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { threadId } from 'node:worker_threads';
import pino from 'pino';
import { Coordinator, DEFAULT_CONFIG, Store, type Config, type Rollout } from '@guts-upgrade/coordinator';
import { RECOVERY, TRANSITIONS, canTransition, type State } from '@guts-upgrade/agent';
import {
  STEP_NAMES,
  agentMessage,
  classifyDelivery,
  commandDigest,
  decodeCoordinatorMessage,
  encode,
  type AgentMessage,
  type Command,
  type NodeStatus,
  type Result,
  type StepName,
} from '@guts-upgrade/protocol';
import { activeWeight, leaderOfView, quorumWeightFor, type ChainValidator, type FinalizedBlock } from '@guts-upgrade/protocol/chain';
import { Rng } from './prng.js';
import { Scheduler } from './scheduler.js';

export const VIEW_MS = 200;
export const HB_MS = 2000;
const TICK_MS = 2000;
const HB_TIMEOUT_MS = 6000;
/** Faults are drawn before this virtual time; after it the world heals and the rollout must settle. */
const HORIZON_MS = 20_000;
/** Room for a rollout slowed by the faults to finish after them; a settled run ends early. */
const SETTLE_MS = 160_000;
const FROM = '1.0.0';
const TO = '1.1.0';
const SHA = 'ab'.repeat(32);

export type BuildKind = 'good' | 'exits' | 'never-ready' | 'corrupts' | 'lies-version' | 'degrades-later';
export const PLANTED_BUGS = ['budget-off-by-one', 'leader-not-excluded', 'resend-new-id'] as const;
export type PlantedBug = (typeof PLANTED_BUGS)[number];

export interface SimOptions {
  seed: number;
  /** Directory for the database file (a tmpfs keeps fsyncs cheap). */
  dir: string;
  /** A migrated empty database to copy instead of migrating per run. */
  template?: string;
  plant?: PlantedBug;
  /** Keep the whole trace (for --seed); otherwise only the tail is kept. */
  fullTrace?: boolean;
}

export interface SimResult {
  seed: number;
  violations: string[];
  trace: string[];
  events: number;
  virtualMs: number;
  outcome: string;
}

class CrashSignal extends Error {}

interface JournalRow {
  id: string;
  kind: Command['kind'];
  digest: string;
  rolloutId: string | null;
  state: State;
  target: string | null;
  fromVersion: string;
  result: Result | null;
  startedAt: string;
  issuedAt: string;
  code?: string;
  message?: string;
  /** The node's view when the agent last stopped it, as the real agent reports it. */
  stoppedAtView?: number;
}

interface SimVal extends ChainValidator {
  host: Host | null;
  /** For unmanaged validators: whether it runs. */
  up: boolean;
  outsideSince: number | null;
}

/** An in-memory websocket: the coordinator-side end of one agent link. */
class SimSocket extends EventEmitter {
  readyState = 1;
  constructor(private readonly link: Link) {
    super();
  }
  send(body: string): void {
    this.link.world.toAgent(this.link, body);
  }
  close(): void {
    this.link.world.closeLink(this.link, 'closed by the coordinator');
  }
  terminate(): void {
    this.close();
  }
}

class Link {
  open = true;
  readonly cs: SimSocket;
  lastToCoord = 0;
  lastToAgent = 0;
  constructor(
    readonly world: World,
    readonly host: Host,
    readonly life: number,
  ) {
    this.cs = new SimSocket(this);
  }
}

/** One managed validator: its guts-node and its agent. */
class Host {
  // the node
  installed = FROM;
  running = true;
  ready = true;
  degraded = false;
  /** Catching up after a start: it votes again once it has every finalized block. */
  syncing = false;
  syncedHeight = 0;
  knownHeight = 0;
  backupFrom: string | null = null;
  downCause: 'rollout' | 'outside' | null = null;
  /** How many times the agent stopped the node: systemd restarts a crashed node unless the agent stopped it since. */
  agentStops = 0;
  dispatchedAt = 0;
  // the agent
  agentAlive = true;
  agentGen = 0;
  journal = new Map<string, JournalRow>();
  order: string[] = [];
  link: Link | null = null;
  seq = 0;
  token = '';
  liar = false;
  crashAtState: State | null = null;
  blockedUntil = 0;
  slowUntil = 0;
  reorderUntil = 0;
  duplicateNext = 0;
  /** Every upgrade command id this agent received, per rollout (the "upgraded twice" check). */
  upgradeIds = new Map<string, Set<string>>();
  begun = new Set<string>();

  constructor(
    readonly id: string,
    readonly val: SimVal,
  ) {}

  running_(): JournalRow | null {
    for (let i = this.order.length - 1; i >= 0; i--) {
      const r = this.journal.get(this.order[i]!)!;
      if (TRANSITIONS[r.state].length > 0) return r;
    }
    return null;
  }
}

export class World {
  readonly rng: Rng;
  readonly sched = new Scheduler();
  readonly trace: string[] = [];
  readonly violations: string[] = [];
  readonly hosts: Host[] = [];
  readonly vals: SimVal[] = [];
  readonly file: string;
  private readonly log = pino({ level: 'silent' });
  private readonly config: Config;
  epoch = 1;
  view = 0;
  blocks: FinalizedBlock[] = [];
  lastBlockAt = 0;
  private quorumUpSince: number | null = null;
  lastOutsideChangeAt = -1e9;
  build: BuildKind = 'good';
  /** Blocks per second a restarted node catches up (the chain makes 1000 / VIEW_MS at most). */
  syncRate = 100;
  coord: Coordinator | null = null;
  store: Store | null = null;
  life = 0;
  coordAlive = false;
  crashAfterSends = -1;
  rolloutId: string | null = null;
  lastRolloutState = '';
  operatorRolledBack = false;
  outcome = 'no rollout';
  private strategyCanary = false;
  private readonly sentIds = new Set<string>();
  private readonly idsBeforeRestart = new Set<string>();
  private stopped = false;
  private lastFaultAt = 0;
  /** A settled rollout may still be paused, resumed or rolled back by an operator until then; other faults no longer matter. */
  private lastOperatorAt = 0;

  constructor(readonly opts: SimOptions) {
    this.rng = new Rng(opts.seed);
    this.file = join(opts.dir, `sim-${opts.seed}-${process.pid}-${threadId}.db`);
    this.config = {
      ...DEFAULT_CONFIG,
      db: this.file,
      heartbeat: { intervalMs: HB_MS, timeoutMs: HB_TIMEOUT_MS },
      tickMs: TICK_MS,
      chain: { slackMargin: 0, requireProducedBlock: true },
    };
    this.sched.onError = (err) => this.onError(err);
  }

  // ------------------------------------------------------------ trace and checks

  note(what: string): void {
    const line = `${(this.sched.now / 1000).toFixed(3).padStart(8)} ${what}`;
    this.trace.push(line);
    if (!this.opts.fullTrace && this.trace.length > 400) this.trace.splice(0, 200);
  }

  violate(what: string): void {
    if (this.violations.includes(what)) return;
    this.violations.push(what);
    this.note(`VIOLATION ${what}`);
  }

  private onError(err: unknown): void {
    if (err instanceof CrashSignal) {
      this.crashCoordinator('in the middle of a tick, after a commit, before every send went out');
      return;
    }
    this.violate(`uncaught exception: ${(err as Error).stack ?? String(err)}`);
  }

  private rid(s: string): string {
    return this.rolloutId ? s.split(this.rolloutId).join('R') : s;
  }

  // ------------------------------------------------------------ the chain

  private votes(v: SimVal): boolean {
    const h = v.host;
    if (!h) return v.up;
    return h.running && h.ready && !h.degraded && !h.syncing;
  }

  quorum(): number {
    return quorumWeightFor(activeWeight(this.vals));
  }

  tolerance(): number {
    return activeWeight(this.vals) - this.quorum();
  }

  private setReport() {
    return {
      epoch: this.epoch,
      totalWeight: activeWeight(this.vals),
      quorumWeight: this.quorum(),
      validators: this.vals.map(({ name, pubkey, weight, active }) => ({ name, pubkey, weight, active })),
    };
  }

  private stepView(): void {
    const leader = leaderOfView(this.view, this.vals) as SimVal | null;
    let up = 0;
    for (const v of this.vals) if (v.active && this.votes(v)) up += v.weight;
    if (leader && this.votes(leader) && up >= this.quorum()) {
      const height = (this.blocks.at(-1)?.height ?? 0) + 1;
      this.blocks.push({ height, blockId: `b${height}`, view: this.view, producer: leader.pubkey, signatureCount: null });
      if (this.blocks.length > 32) this.blocks.shift();
      this.lastBlockAt = this.sched.now;
    }
    for (const h of this.hosts) {
      if (h.syncing && h.running && h.ready && !h.degraded) {
        h.syncedHeight = Math.min(this.height(), Math.max(h.syncedHeight, h.knownHeight) + (this.syncRate * VIEW_MS) / 1000);
        h.knownHeight = Math.floor(h.syncedHeight);
        if (h.knownHeight >= this.height()) h.syncing = false;
      }
      if (!this.votes(h.val)) continue;
      h.knownHeight = this.height();
      h.syncedHeight = h.knownHeight;
      h.downCause = null;
    }
    this.view++;
  }

  height(): number {
    return this.blocks.at(-1)?.height ?? 0;
  }

  /**
   * The safety invariants on the true state of the chain, after every event:
   * weight down (unhealthy included) within what the chain tolerates, unless
   * faults from outside the rollout alone exceed it or happened too recently
   * for any coordinator to have seen them before its last dispatch.
   */
  private checkBudget(): void {
    let down = 0;
    let outside = 0;
    let latestDispatch = -1;
    for (const v of this.vals) {
      if (!v.active || this.votes(v)) continue;
      down += v.weight;
      const h = v.host;
      if (h && h.downCause === 'rollout') latestDispatch = Math.max(latestDispatch, h.dispatchedAt);
      else outside += v.weight;
    }
    const tol = this.tolerance();
    if (down <= tol) return;
    if (outside > tol) return; // outside faults alone exceed it: exempt (the rollout must wait, checked at dispatch)
    // What the coordinator could know: a validator is proven live by its own latest leader view.
    const staleness = (this.vals.length + 2) * VIEW_MS + 2 * HB_MS + TICK_MS;
    if (latestDispatch >= 0 && latestDispatch < this.lastOutsideChangeAt + staleness) return;
    this.violate(
      `weight down ${down} exceeds what the chain tolerates (${tol}; quorum ${this.quorum()} of ${activeWeight(this.vals)}), outside faults ${outside}: ${this.vals
        .filter((v) => v.active && !this.votes(v))
        .map(
          (v) =>
            `${v.name}(${v.weight},${v.host ? `${v.host.downCause}${v.host.running ? '' : ' stopped'}${v.host.degraded ? ' degraded' : ''}${v.host.ready ? '' : ' not-ready'}${v.host.syncing ? ` syncing at ${Math.floor(v.host.syncedHeight)}/${this.height()}` : ''}` : 'unmanaged'})`,
        )
        .join(' ')}`,
    );
  }

  private checkLiveness(): void {
    let up = 0;
    for (const v of this.vals) if (v.active && this.votes(v)) up += v.weight;
    if (up < this.quorum()) {
      this.quorumUpSince = null;
      return;
    }
    this.quorumUpSince ??= this.sched.now;
    if (this.sched.now - Math.max(this.lastBlockAt, this.quorumUpSince) > 3 * this.vals.length * VIEW_MS + 2 * VIEW_MS) {
      this.violate(`the chain stopped finalizing with weight ${up} up (quorum ${this.quorum()})`);
    }
  }

  private outsideChange(what: string): void {
    this.lastOutsideChangeAt = this.sched.now;
    this.note(`fault ${what}`);
  }

  // ------------------------------------------------------------ the coordinator

  startCoordinator(): void {
    const life = ++this.life;
    if (this.opts.template && life === 1) copyFileSync(this.opts.template, this.file);
    const store = new Store(this.file);
    if (life > 1) this.checkLogAgrees(store);
    const alive = () => this.coordAlive && this.life === life;
    this.coordAlive = true;
    const coord = new Coordinator(this.config, store, this.log, () => this.sched.now, this.sched.timers(alive));
    this.store = store;
    this.coord = coord;
    this.wrapTransport(coord, life);
    this.plantDecideBug(coord);
    coord.on('rollout', () => this.onRolloutChanged());
    coord.loop.start();
    this.note(`coordinator started (life ${life})`);
  }

  private wrapTransport(coord: Coordinator, life: number): void {
    const hub = coord.hub;
    const send = hub.send.bind(hub);
    let sendsThisLife = 0;
    hub.send = (nodeId: string, body: string): boolean => {
      if (this.crashAfterSends >= 0 && sendsThisLife >= this.crashAfterSends) {
        this.crashAfterSends = -1;
        throw new CrashSignal('crash');
      }
      sendsThisLife++;
      let out = body;
      const cmd = JSON.parse(body) as Command;
      if (this.opts.plant === 'resend-new-id' && life > 1 && this.idsBeforeRestart.has(cmd.id)) {
        // Planted bug: an open command from before the restart goes out again under a new id.
        out = JSON.stringify({ ...cmd, id: `${cmd.id}.re${life}` });
      }
      if (!this.sentIds.has(cmd.id)) {
        this.sentIds.add(cmd.id);
        this.onDispatch(coord, nodeId, cmd);
      }
      return send(nodeId, out);
    };
  }

  /** Planted bugs that wrap decide()'s returned actions (the loop applies them in one transaction). */
  private plantDecideBug(coord: Coordinator): void {
    const plant = this.opts.plant;
    if (plant !== 'budget-off-by-one' && plant !== 'leader-not-excluded') return;
    type Apply = (
      rollout: Rollout,
      steps: { nodeId: string; state: string; attempt: number }[],
      actions: ActionLike[],
      outgoing: unknown[],
      now: number,
    ) => void;
    type ActionLike = { kind: string; nodeId?: string; command?: string; commandId?: string; to?: string; options?: unknown; patch?: unknown };
    const loop = coord.loop as unknown as { apply: Apply };
    const apply = loop.apply.bind(coord.loop);
    loop.apply = (rollout, steps, actions, outgoing, now) => {
      const sends = actions.filter((a) => a.kind === 'send' && a.command === 'upgrade');
      if (sends.length > 0) {
        const fleet = coord.fleetView(now);
        const taken = new Set(sends.map((a) => a.nodeId));
        const others = steps.filter((s) => s.state === 'pending' && !taken.has(s.nodeId) && fleet.nodes.get(s.nodeId)?.healthy);
        if (plant === 'budget-off-by-one') {
          const extra = others.find((s) => s.nodeId !== fleet.leader);
          if (extra) {
            const first = sends[0]!;
            const id = `${rollout.id}.${extra.nodeId}.upgrade.${extra.attempt + 1}`;
            actions = [
              ...actions,
              { kind: 'step', nodeId: extra.nodeId, to: 'upgrading', patch: { startedAt: now, fromVersion: FROM } },
              { ...first, nodeId: extra.nodeId, commandId: id },
            ];
          }
        } else {
          const leader = others.find((s) => s.nodeId === fleet.leader);
          const victim = sends[0]!;
          if (leader && victim.nodeId !== leader.nodeId) {
            const id = `${rollout.id}.${leader.nodeId}.upgrade.${leader.attempt + 1}`;
            actions = actions.map((a) => {
              if (a.nodeId !== victim.nodeId) return a;
              if (a.kind === 'send') return { ...a, nodeId: leader.nodeId, commandId: id };
              if (a.kind === 'step' && a.to === 'upgrading') return { ...a, nodeId: leader.nodeId };
              return a;
            });
          }
        }
      }
      apply(rollout, steps as never, actions, outgoing, now);
    };
  }

  /** A command goes on the wire for the first time: the dispatch-time invariants. */
  private onDispatch(coord: Coordinator, nodeId: string, cmd: Command): void {
    const fv = coord.fleetView(this.sched.now);
    this.note(
      `send ${cmd.kind} ${this.rid(cmd.id)} -> ${nodeId} (chain ${fv.chain ? `${fv.chain.status}, ${fv.chain.validators.map((v) => `${v.managedBy}:${v.weight}:${v.live ? 'live' : v.verdict}@${v.provenAt ?? '-'}`).join(' ')} quorum ${fv.chain.quorumWeight} epoch ${fv.chain.epoch}` : 'unknown'})`,
    );
    if (cmd.kind !== 'upgrade' || !cmd.rolloutId) return;
    const r = this.store!.rollout(cmd.rolloutId);
    if (!r) return;
    // The decision is checked on what the coordinator saw when it made it: a command committed
    // before a crash and first delivered after the restart was decided earlier.
    if (this.store!.command(cmd.id)?.createdAt !== this.sched.now) return;
    const fleet = coord.fleetView(this.sched.now);
    const preSoakCanary = r.strategy === 'canary' && !r.data.soakPassed;
    if (fleet.leader === nodeId && !preSoakCanary) {
      const others = this.store!.steps(r.id).filter((s) => s.state === 'pending' && s.nodeId !== nodeId && fleet.nodes.get(s.nodeId)?.healthy);
      if (others.length > 0) this.violate(`the leader ${nodeId} was taken down while ${others.map((s) => s.nodeId).join(', ')} were pending`);
    }
  }

  private lastWaiting: string | null = null;

  private onRolloutChanged(): void {
    if (!this.rolloutId || !this.store) return;
    const r = this.store.rollout(this.rolloutId);
    if (!r) return;
    const s = `${r.state}${r.code ? ` ${r.code}` : ''}`;
    if (s !== this.lastRolloutState) {
      this.lastRolloutState = s;
      this.note(`rollout ${s}${r.reason ? `: ${r.reason}` : ''}`);
    }
    const waiting = r.data.waiting ?? null;
    if (waiting !== this.lastWaiting) {
      this.lastWaiting = waiting;
      this.note(waiting ? `rollout waits: ${waiting}` : 'rollout no longer waits');
    }
  }

  crashCoordinator(how: string): void {
    if (!this.coordAlive) return;
    this.coordAlive = false;
    this.note(`fault coordinator kill -9 ${how}`);
    for (const c of this.store!.openCommands()) this.idsBeforeRestart.add(c.id);
    for (const h of this.hosts) if (h.link && h.link.life === this.life) this.closeLink(h.link, 'coordinator died');
    this.store!.close();
    this.store = null;
    this.coord = null;
    this.sched.after(this.rng.int(300, 4000), () => !this.stopped && this.startCoordinator());
  }

  /** After a restart: the event log and the state agree (every state has its event, every command its send). */
  private checkLogAgrees(store: Store): void {
    for (const r of store.rollouts()) {
      const last = store.db.prepare("SELECT data FROM events WHERE rollout_id = ? AND type = 'rollout.state' ORDER BY seq DESC LIMIT 1").get(r.id) as
        | { data: string }
        | undefined;
      const logged = last ? (JSON.parse(last.data) as { to: string }).to : 'planned';
      if (logged !== r.state) this.violate(`after restart rollout ${this.rid(r.id)} is ${r.state} but its event log says ${logged}`);
      const sent = new Set(
        (store.db.prepare("SELECT data FROM events WHERE rollout_id = ? AND type = 'command.sent'").all(r.id) as { data: string }[]).map(
          (e) => (JSON.parse(e.data) as { commandId: string }).commandId,
        ),
      );
      for (const c of store.commandsFor(r.id).values()) if (!sent.has(c.id)) this.violate(`after restart command ${this.rid(c.id)} has no command.sent event`);
      for (const s of store.steps(r.id))
        if (s.commandId && !store.command(s.commandId)) this.violate(`after restart step ${s.nodeId} names a missing command ${this.rid(s.commandId)}`);
    }
  }

  // ------------------------------------------------------------ links

  private delay(h: Host): number {
    return this.sched.now < h.slowUntil ? this.rng.int(200, 2500) : this.rng.int(1, 30);
  }

  connect(h: Host): void {
    if (!h.agentAlive || h.link || this.stopped) return;
    if (!this.coordAlive || this.sched.now < h.blockedUntil) {
      const gen = h.agentGen;
      this.sched.after(this.rng.int(300, 2000), () => h.agentGen === gen && this.connect(h));
      return;
    }
    const link = new Link(this, h, this.life);
    h.link = link;
    this.coord!.hub.handleAgent(link.cs as never, { headers: { authorization: `Bearer ${h.token}`, 'x-guts-node-id': h.id } } as never);
    const hello = agentMessage('hello', {
      nodeId: h.id,
      agentVersion: 'sim',
      validatorPubkey: h.val.pubkey,
      status: this.status(h),
      recentResults: h.order
        .slice(-10)
        .map((id) => h.journal.get(id)!.result)
        .filter((r): r is Result => r != null),
    });
    this.toCoord(h, hello);
  }

  closeLink(link: Link, why: string): void {
    if (!link.open) return;
    link.open = false;
    link.cs.readyState = 3;
    const h = link.host;
    if (this.coordAlive && this.life === link.life) {
      this.sched.after(this.rng.int(1, 50), () => this.coordAlive && this.life === link.life && link.cs.emit('close'));
    }
    if (h.link === link) {
      h.link = null;
      this.note(`link ${h.id} down: ${why}`);
      const gen = h.agentGen;
      this.sched.after(this.rng.int(200, 3000), () => h.agentGen === gen && this.connect(h));
    }
  }

  private toCoord(h: Host, msg: AgentMessage): void {
    const link = h.link;
    if (!link?.open) return;
    const body = encode(msg);
    let copies = 1;
    if (h.duplicateNext > 0 && msg.type !== 'hello') {
      h.duplicateNext--;
      copies = 2;
    }
    for (let i = 0; i < copies; i++) {
      let at = this.sched.now + this.delay(h);
      // One connection is ordered (TCP) unless the schedule reorders it on purpose.
      if (this.sched.now >= h.reorderUntil) at = Math.max(at, link.lastToCoord);
      link.lastToCoord = Math.max(link.lastToCoord, at);
      this.sched.at(at, () => {
        if (!link.open || !this.coordAlive || this.life !== link.life) return;
        link.cs.emit('message', Buffer.from(body));
      });
    }
  }

  toAgent(link: Link, body: string): void {
    if (!link.open) return;
    const h = link.host;
    const at = Math.max(this.sched.now + this.delay(h), link.lastToAgent);
    link.lastToAgent = at;
    this.sched.at(at, () => {
      if (!link.open || h.link !== link || !h.agentAlive) return;
      this.onCoordMessage(h, body);
    });
  }

  // ------------------------------------------------------------ the agents

  status(h: Host): NodeStatus {
    const run = h.running_();
    const up = h.running && h.ready && !h.degraded;
    const leader = leaderOfView(this.view, this.vals);
    const blocks = this.blocks.filter((b) => b.height <= h.knownHeight).slice(-10);
    return {
      nodeVersion: h.installed,
      health: up ? 'up' : 'down',
      ready: h.running && h.ready,
      isLeader: h.liar ? true : h.running && leader?.pubkey === h.val.pubkey,
      currentLeader: h.liar ? h.val.pubkey : h.running ? (leader?.pubkey ?? null) : null,
      finalizedHeight: h.liar ? 1e12 : h.running ? h.knownHeight : null,
      view: h.liar ? 1e9 : h.running ? this.view : null,
      peerCount: h.running ? 3 : null,
      ...(h.running ? { chain: { validators: this.setReport(), blocks } } : {}),
      busy: run ? { commandId: run.id, kind: run.kind, step: (STEP_NAMES as readonly string[]).includes(run.state) ? (run.state as StepName) : null } : null,
    };
  }

  private heartbeat(h: Host, gen: number): void {
    if (h.agentGen !== gen || !h.agentAlive) return;
    if (h.link?.open) this.toCoord(h, agentMessage('heartbeat', { nodeId: h.id, seq: h.seq++, status: this.status(h) }));
    this.sched.after(HB_MS, () => this.heartbeat(h, gen));
  }

  private onCoordMessage(h: Host, body: string): void {
    const d = decodeCoordinatorMessage(body);
    if (!d.ok) return this.violate(`the coordinator sent a bad message to ${h.id}: ${d.error}`);
    const m = d.message;
    if (m.type === 'welcome') return;
    if (m.type === 'refused') {
      this.note(`refused ${h.id}: ${m.code} ${m.message}`);
      return;
    }
    this.onCommand(h, m);
  }

  private ack(h: Host, commandId: string, status: 'accepted' | 'duplicate' | 'rejected', code?: string, message?: string): void {
    this.toCoord(h, agentMessage('ack', { commandId, status, ...(code ? { code } : {}), ...(message ? { message } : {}) }));
  }

  private onCommand(h: Host, cmd: Command): void {
    const existing = h.journal.get(cmd.id);
    const delivery = classifyDelivery(cmd, existing?.digest);
    if (delivery === 'conflict') return this.ack(h, cmd.id, 'rejected', 'E_DUPLICATE_COMMAND', 'other content');
    if (delivery === 'duplicate') {
      this.ack(h, cmd.id, 'duplicate');
      if (existing?.result) this.toCoord(h, existing.result);
      return;
    }
    if (cmd.kind === 'upgrade' && cmd.rolloutId) {
      const ids = h.upgradeIds.get(cmd.rolloutId) ?? new Set<string>();
      ids.add(cmd.id);
      h.upgradeIds.set(cmd.rolloutId, ids);
      if (ids.size > 1) this.violate(`${h.id} was sent ${ids.size} upgrade commands in one rollout: ${[...ids].map((i) => this.rid(i)).join(', ')}`);
    }
    const busy = h.running_();
    if (busy) return this.ack(h, cmd.id, 'rejected', 'E_BUSY', `command ${busy.id} is running`);
    if (cmd.kind === 'rollback' && !h.backupFrom) return this.ack(h, cmd.id, 'rejected', 'E_NOTHING_TO_ROLLBACK', 'no committed upgrade to roll back');
    if (h.begun.has(cmd.id)) this.violate(`${h.id} ran command ${this.rid(cmd.id)} twice`);
    h.begun.add(cmd.id);
    const row: JournalRow = {
      id: cmd.id,
      kind: cmd.kind,
      digest: commandDigest(cmd),
      rolloutId: cmd.rolloutId ?? null,
      state: 'received',
      target: cmd.kind === 'rollback' ? (cmd.toVersion ?? h.backupFrom) : cmd.target.version,
      fromVersion: h.installed,
      result: null,
      startedAt: new Date(this.sched.now).toISOString(),
      issuedAt: cmd.issuedAt,
    };
    h.journal.set(cmd.id, row);
    h.order.push(cmd.id);
    if (h.order.length > 50) h.journal.delete(h.order.shift()!);
    this.ack(h, cmd.id, 'accepted');
    this.note(`agent ${h.id} runs ${this.rid(cmd.id)}`);
    this.advance(h, row);
  }

  /** Moves a command to `to` by the agent's own transition table; may crash the agent there (armed fault). */
  private move(h: Host, row: JournalRow, to: State): boolean {
    if (!canTransition(row.state, to)) {
      this.violate(`agent ${h.id}: illegal transition ${row.state} -> ${to}`);
      return false;
    }
    row.state = to;
    if ((STEP_NAMES as readonly string[]).includes(to)) {
      this.toCoord(h, agentMessage('progress', { commandId: row.id, step: to as StepName, state: 'started', at: new Date(this.sched.now).toISOString() }));
    }
    if (h.crashAtState === to) {
      h.crashAtState = null;
      this.crashAgent(h, `at step ${to}`);
      return false;
    }
    return true;
  }

  /** Runs the next step of the agent's pipeline after its duration. */
  private advance(h: Host, row: JournalRow): void {
    const gen = h.agentGen;
    const later = (ms: number, fn: () => void): void => {
      this.sched.after(ms, () => h.agentGen === gen && h.agentAlive && fn());
    };
    const next = (to: State, ms: number, effect?: () => string | null): void =>
      later(ms, () => {
        if (!this.move(h, row, to)) return;
        const failure = effect?.() ?? null;
        if (failure) return this.fail(h, row, failure);
        this.advance(h, row);
      });
    const target = row.target ?? FROM;
    switch (row.state) {
      case 'received':
        if (row.kind === 'rollback') {
          return later(50, () => this.move(h, row, 'rollback') && this.rollbackNode(h, row, 'succeeded'));
        }
        return next('preflight', this.rng.int(20, 100));
      case 'preflight':
        return next('fetch', this.rng.int(50, 400));
      case 'fetch':
        if (row.kind === 'prepare' || h.installed === target) return this.finish(h, row, 'succeeded');
        return next('backup', this.rng.int(50, 300));
      case 'backup':
        return next('stop', this.rng.int(20, 100), () => {
          this.takeDown(h, row);
          return null;
        });
      case 'stop':
        return next('install', this.rng.int(20, 100), () => {
          h.installed = target;
          return null;
        });
      case 'install':
        return next('migrate', this.rng.int(20, 200), () => (this.build === 'corrupts' ? 'E_MIGRATION:migration corrupted the data' : null));
      case 'migrate':
        return next('start', this.rng.int(50, 300), () => {
          h.running = true;
          h.ready = this.build !== 'never-ready';
          h.syncing = true;
          if (this.build === 'exits') {
            h.running = false;
            return 'E_START:guts-node exited during start';
          }
          if (this.build === 'never-ready') return 'E_HEALTH_TIMEOUT:guts-node not ready';
          return null;
        });
      case 'start':
        return next('verify', this.rng.int(100, 500), () =>
          this.build === 'lies-version' ? `E_VERSION_MISMATCH:--version says 9.9.9, expected ${target}` : null,
        );
      case 'verify':
        return next('commit', this.rng.int(10, 50), () => {
          h.backupFrom = row.fromVersion;
          return null;
        });
      case 'commit':
        if (this.build === 'degrades-later') {
          later(this.rng.int(2000, 15_000), () => {
            if (h.installed !== TO || h.degraded) return;
            h.degraded = true;
            if (h.downCause == null) h.downCause = 'outside';
            this.outsideChange(`${h.id} on the bad build degrades`);
          });
        }
        return this.finish(h, row, 'succeeded');
      default:
        return;
    }
  }

  /**
   * When the coordinator decided to take the node down: the command's issuedAt. A command decided
   * before a crash or a partition reaches the agent later, unchecked against the slack of that
   * later moment (a known limit, see seed 183); the budget check judges the decision.
   */
  private dispatchTimeOf(row: JournalRow): number {
    return Date.parse(row.issuedAt);
  }

  private fail(h: Host, row: JournalRow, failure: string): void {
    const [code, message] = failure.split(/:(.*)/s) as [string, string];
    if (RECOVERY[row.state as keyof typeof RECOVERY] === 'roll-back' || ['stop', 'install', 'migrate', 'start', 'verify'].includes(row.state)) {
      row.code = code;
      row.message = message;
      if (this.move(h, row, 'rollback')) this.rollbackNode(h, row, 'rolled_back');
      return;
    }
    row.code = code;
    row.message = message;
    if (this.move(h, row, 'failed')) this.finish(h, row, 'failed');
  }

  /** The command stops the node: down because of the rollout, unless it was down already (then nothing more goes down). */
  private takeDown(h: Host, row: JournalRow): void {
    if (h.running) row.stoppedAtView = Math.max(row.stoppedAtView ?? 0, this.view);
    h.agentStops++;
    if (this.votes(h.val)) {
      h.downCause = 'rollout';
      h.dispatchedAt = this.dispatchTimeOf(row);
    }
    h.running = false;
  }

  /** Stops the node, puts the old version back (binary and data), starts it, and ends the command. */
  private rollbackNode(h: Host, row: JournalRow, outcome: 'rolled_back' | 'succeeded'): void {
    const back = row.kind === 'rollback' ? (h.backupFrom ?? FROM) : row.fromVersion;
    this.takeDown(h, row);
    const gen = h.agentGen;
    this.sched.after(this.rng.int(300, 2000), () => {
      if (h.agentGen !== gen || !h.agentAlive) return; // died mid-rollback: recovery rolls back again
      h.installed = back;
      h.degraded = false;
      h.running = true;
      h.ready = true;
      h.syncing = true;
      if (row.kind === 'rollback') h.backupFrom = null;
      if (!this.move(h, row, outcome)) return;
      this.finish(h, row, outcome, true);
    });
  }

  private finish(h: Host, row: JournalRow, outcome: 'succeeded' | 'rolled_back' | 'failed', moved = false): void {
    if (!moved && row.state !== outcome && !this.move(h, row, outcome)) return;
    const result = agentMessage('result', {
      commandId: row.id,
      kind: row.kind,
      outcome,
      fromVersion: row.fromVersion,
      toVersion: row.target,
      runningVersion: h.installed,
      ...(row.code ? { code: row.code } : {}),
      ...(row.message ? { message: row.message } : {}),
      ...(row.stoppedAtView != null ? { stoppedAtView: row.stoppedAtView } : {}),
      startedAt: row.startedAt,
      finishedAt: new Date(this.sched.now).toISOString(),
    });
    row.result = result;
    this.note(`agent ${h.id} ${this.rid(row.id)} ${outcome}${row.code ? ` ${row.code}` : ''}`);
    this.toCoord(h, result);
  }

  crashAgent(h: Host, how: string): void {
    if (!h.agentAlive) return;
    h.agentAlive = false;
    h.agentGen++;
    this.note(`fault agent ${h.id} kill -9 ${how}`);
    if (h.link) {
      const link = h.link;
      this.closeLink(link, 'agent died');
    }
    const gen = h.agentGen;
    this.sched.after(this.rng.int(300, 5000), () => h.agentGen === gen && this.restartAgent(h));
  }

  /** The agent restarts: an interrupted command ends per the agent's RECOVERY table, then it reconnects. */
  private restartAgent(h: Host): void {
    h.agentAlive = true;
    const row = h.running_();
    if (row) {
      const rec = RECOVERY[row.state as keyof typeof RECOVERY];
      this.note(`agent ${h.id} restarts: ${this.rid(row.id)} was in ${row.state} -> ${rec}`);
      row.code = 'E_INTERRUPTED';
      row.message = `the agent was interrupted in state ${row.state}`;
      if (rec === 'fail-untouched') {
        if (this.move(h, row, 'failed')) this.finish(h, row, 'failed');
      } else if (rec === 'record-success') {
        delete row.code;
        delete row.message;
        this.finish(h, row, 'succeeded');
      } else if (row.kind === 'rollback') {
        this.rollbackNode(h, row, 'succeeded');
      } else {
        if (row.state !== 'rollback' && !this.move(h, row, 'rollback')) return;
        this.rollbackNode(h, row, 'rolled_back');
      }
    }
    if (!h.agentAlive) return;
    const gen = h.agentGen;
    this.sched.after(HB_MS, () => this.heartbeat(h, gen));
    this.connect(h);
  }

  // ------------------------------------------------------------ setup and faults

  private setup(): void {
    const r = this.rng;
    for (;;) {
      const k = r.int(4, 5);
      const unmanaged = r.int(0, 1);
      this.vals.length = 0;
      for (let i = 0; i < k; i++) {
        const weight = r.chance(0.25) ? 2 : 1;
        this.vals.push({ name: `val${i}`, pubkey: `${(i + 16).toString(16)}aa`, weight, active: true, host: null, up: true, outsideSince: null });
      }
      const tol = this.tolerance();
      // A validator heavier than the largest slack is refused at plan time; keep plans that can run.
      if (this.vals.slice(0, k - unmanaged).every((v) => v.weight <= tol)) {
        for (let i = 0; i < k - unmanaged; i++) {
          const h = new Host(`v${i}`, this.vals[i]!);
          this.vals[i]!.host = h;
          this.hosts.push(h);
        }
        break;
      }
    }
    this.build = r.weighted<BuildKind>([
      ['good', 12],
      ['exits', 2],
      ['never-ready', 2],
      ['corrupts', 2],
      ['lies-version', 2],
      ['degrades-later', 2],
    ]);
    // A slow node still syncs faster than the chain makes blocks (one a view, 1000 / VIEW_MS a
    // second): one that cannot keep up never rejoins, and a rollout that waits for it, as it must,
    // runs past any horizon (seed 8406 at 4 blocks/s took 160 s to see it back).
    const chainRate = 1000 / VIEW_MS;
    this.syncRate = r.chance(0.2) ? r.int(chainRate + 1, chainRate + 4) : r.int(30, 300);
    const f = Math.floor((this.vals.length - 1) / 3);
    if (r.chance(0.15) && f > 0) r.pick(this.hosts).liar = true;
    this.note(
      `world: ${this.vals.map((v) => `${v.name}:${v.weight}${v.host ? `=${v.host.id}${v.host.liar ? '(liar)' : ''}` : '(unmanaged)'}`).join(' ')}; build ${this.build}; sync ${this.syncRate} blocks/s`,
    );
  }

  private register(): void {
    for (const h of this.hosts) h.token = this.coord!.nodes.register(h.id, null, 'sim', h.val.pubkey).token;
  }

  private createRollout(): void {
    const r = this.rng;
    const canary = r.chance(0.25);
    this.strategyCanary = canary;
    try {
      const ro = this.coord!.rollouts.create(
        {
          target: { version: TO, url: 'http://artifacts.invalid/guts-node-1.1.0.tgz', sha256: SHA },
          strategy: canary ? 'canary' : 'rolling',
          options: {
            maxUnavailable: r.int(1, Math.max(1, Math.floor((this.vals.length - 1) / 3))),
            stabilizationMs: r.pick([0, 0, 500, 2000]),
            soakMs: 2000,
            syncDistance: 3,
            syncTimeoutMs: 20_000,
            autoRollback: r.chance(0.4),
            ...(canary ? { canary: r.pick(this.hosts).id } : {}),
          },
        },
        'sim',
      );
      this.rolloutId = ro.id;
      this.note(`rollout created (${canary ? 'canary' : 'rolling'}, maxUnavailable ${ro.options.maxUnavailable}, autoRollback ${ro.options.autoRollback})`);
      this.onRolloutChanged();
    } catch (err) {
      this.outcome = `plan refused: ${(err as { code?: string }).code ?? ''} ${(err as Error).message}`;
      this.note(this.outcome);
    }
  }

  private scheduleFaults(): void {
    const r = this.rng;
    const count = r.int(2, 8);
    for (let i = 0; i < count; i++) {
      const at = r.int(3000, HORIZON_MS);
      this.lastFaultAt = Math.max(this.lastFaultAt, at);
      const kind = r.weighted([
        ['agent-crash', 3],
        ['agent-crash-at-step', 4],
        ['disconnect', 3],
        ['partition', 1],
        ['slow-links', 2],
        ['duplicate', 2],
        ['reorder', 1],
        ['coordinator-crash', 3],
        ['coordinator-crash-mid-tick', 2],
        ['node-crash', 2],
        ['unmanaged-down', 2],
        ['operator', 3],
        ['epoch', 1],
      ] as const);
      const h = r.pick(this.hosts);
      switch (kind) {
        case 'agent-crash':
          this.sched.at(at, () => this.crashAgent(h, 'at a random moment'));
          break;
        case 'agent-crash-at-step': {
          const step = r.pick<State>(['received', 'preflight', 'fetch', 'backup', 'stop', 'install', 'migrate', 'start', 'verify', 'commit', 'rollback']);
          this.sched.at(at, () => {
            h.crashAtState = step;
            this.note(`fault armed: agent ${h.id} dies on entering ${step}`);
          });
          break;
        }
        case 'disconnect':
          this.sched.at(at, () => h.link && this.closeLink(h.link, 'network reset'));
          break;
        case 'partition': {
          const ms = r.int(1000, 15_000);
          this.sched.at(at, () => {
            h.blockedUntil = this.sched.now + ms;
            this.note(`fault partition of ${h.id} for ${ms}ms`);
            if (h.link) this.closeLink(h.link, 'partition');
          });
          break;
        }
        case 'slow-links': {
          const ms = r.int(1000, 10_000);
          this.sched.at(at, () => {
            h.slowUntil = this.sched.now + ms;
            this.note(`fault messages of ${h.id} delayed for ${ms}ms`);
          });
          break;
        }
        case 'duplicate': {
          const n = r.int(1, 5);
          this.sched.at(at, () => {
            h.duplicateNext += n;
            this.note(`fault next ${n} messages of ${h.id} duplicated`);
          });
          break;
        }
        case 'reorder': {
          const ms = r.int(1000, 5000);
          this.sched.at(at, () => {
            h.reorderUntil = this.sched.now + ms;
            h.slowUntil = Math.max(h.slowUntil, this.sched.now + ms);
            this.note(`fault messages of ${h.id} reordered for ${ms}ms`);
          });
          break;
        }
        case 'coordinator-crash':
          this.sched.at(at, () => this.crashCoordinator('at a random moment'));
          break;
        case 'coordinator-crash-mid-tick': {
          const n = r.int(0, 2);
          this.sched.at(at, () => {
            this.crashAfterSends = n;
            this.note(`fault armed: coordinator dies after ${n} more send(s)`);
          });
          break;
        }
        case 'node-crash': {
          const ms = r.int(1000, 10_000);
          this.sched.at(at, () => {
            if (h.running_() || !h.running) return;
            h.running = false;
            if (h.downCause == null) h.downCause = 'outside';
            this.outsideChange(`node ${h.id} crashes for ${ms}ms`);
            const stops = h.agentStops;
            // systemd brings a crashed unit back whatever the agent is doing, unless the agent
            // stopped it in the meantime (a stopped unit stays stopped). Seed 1225: a command that
            // began on the crashed node and died before its stop step left the node down for good.
            this.sched.after(ms, () => {
              if (h.running || h.agentStops !== stops) return;
              h.running = true;
              h.syncing = true;
              this.note(`node ${h.id} restarted`);
            });
          });
          break;
        }
        case 'unmanaged-down': {
          const un = this.vals.filter((v) => !v.host);
          if (un.length === 0) break;
          const v = r.pick(un);
          const ms = r.int(1000, 20_000);
          this.sched.at(at, () => {
            v.up = false;
            this.outsideChange(`unmanaged ${v.name} down for ${ms}ms`);
            this.sched.after(ms, () => {
              v.up = true;
              this.note(`unmanaged ${v.name} up`);
            });
          });
          break;
        }
        case 'operator': {
          const action = r.weighted([
            ['pause', 4],
            ['resume', 5],
            ['abort', 1],
            ['rollback', 2],
          ] as const);
          this.lastOperatorAt = Math.max(this.lastOperatorAt, at);
          this.sched.at(at, () => this.operator(action));
          break;
        }
        case 'epoch': {
          const v = r.pick(this.vals);
          const delta = r.pick([-1, 0, 1]);
          this.sched.at(at, () => {
            this.epoch++;
            v.weight = Math.max(1, Math.min(3, v.weight + delta));
            this.outsideChange(`epoch ${this.epoch}: ${v.name} weight ${v.weight}`);
          });
          break;
        }
      }
    }
    // A resume near the end, so an operator's pause does not always end the run.
    if (r.chance(0.7)) {
      this.lastFaultAt += 1000;
      this.lastOperatorAt = this.lastFaultAt;
      this.sched.at(this.lastFaultAt, () => this.operator('resume'));
    }
  }

  operator(action: 'pause' | 'resume' | 'abort' | 'rollback'): void {
    if (!this.coordAlive || !this.rolloutId) return;
    try {
      this.coord!.rollouts.action(this.rolloutId, action, 'operator', null);
      if (action === 'rollback') this.operatorRolledBack = true;
      this.note(`operator ${action}`);
    } catch (err) {
      if (err instanceof CrashSignal) throw err;
      if ((err as { code?: string }).code !== 'E_INVALID_STATE') throw err;
    }
  }

  // ------------------------------------------------------------ the run

  run(): SimResult {
    this.setup();
    this.startCoordinator();
    this.register();
    for (const h of this.hosts) {
      const gen = h.agentGen;
      this.sched.after(this.rng.int(0, HB_MS), () => this.heartbeat(h, gen));
      this.sched.after(this.rng.int(1, 200), () => this.connect(h));
    }
    const views = () => {
      this.stepView();
      this.sched.after(VIEW_MS, views);
    };
    this.sched.after(VIEW_MS, views);
    this.sched.at(3000, () => this.coordAlive && this.createRollout());
    this.scheduleFaults();
    const end = HORIZON_MS + SETTLE_MS;
    let settledAt: number | null = null;
    let nextSettleCheck = 0;
    let now = 0;
    while (this.violations.length === 0 && this.sched.step(end)) {
      if (this.sched.now !== now) {
        now = this.sched.now;
        this.checkBudget();
        this.checkLiveness();
      }
      if (now >= this.lastOperatorAt && now >= nextSettleCheck) {
        nextSettleCheck = now + 500;
        if (this.settled()) {
          settledAt ??= now;
          if (now - settledAt > 3000) break;
        } else settledAt = null;
      }
    }
    this.stopped = true;
    if (this.violations.length === 0) this.checkEnd();
    this.store?.close();
    rmSync(this.file, { force: true });
    rmSync(`${this.file}-wal`, { force: true });
    rmSync(`${this.file}-shm`, { force: true });
    return {
      seed: this.opts.seed,
      violations: this.violations,
      trace: this.trace,
      events: this.sched.events,
      virtualMs: this.sched.now,
      outcome: this.outcome,
    };
  }

  /** The world is healed after the horizon (faults were all drawn before it); has the rollout settled? */
  private settled(): boolean {
    if (!this.coordAlive || !this.store) return false;
    if (!this.rolloutId) return true;
    const r = this.store.rollout(this.rolloutId);
    if (!r) return false;
    if (['completed', 'failed', 'aborted', 'rolled_back'].includes(r.state) || r.state === 'paused') {
      return this.store.openCommands().length === 0 && this.hosts.every((h) => !h.running_());
    }
    return false;
  }

  private checkEnd(): void {
    if (!this.rolloutId) return;
    if (!this.store) {
      this.violate('the coordinator is not running at the end');
      return;
    }
    const r = this.store.rollout(this.rolloutId)!;
    this.outcome = `${r.state}${r.code ? ` ${r.code}` : ''}`;
    if (['completed', 'failed', 'aborted', 'rolled_back'].includes(r.state)) return;
    if (r.state === 'paused' && r.reason) return;
    const degraded = this.hosts.filter((h) => h.degraded || !this.votes(h.val));
    if (r.data.waiting && degraded.length > 0) return; // waits on nodes the chain shows down, and says why
    this.violate(
      `the rollout ended neither finished nor paused with a reason: ${r.state} (${r.reason ?? 'no reason'}; waiting: ${r.data.waiting ?? 'no'}; ${this.strategyCanary ? 'canary' : 'rolling'})`,
    );
  }
}

export function simulate(opts: SimOptions): SimResult {
  return new World(opts).run();
}

/** A migrated empty database, copied by each run instead of migrating again. */
export function makeTemplate(dir: string): string {
  const file = join(dir, `sim-template-${process.pid}-${threadId}.db`);
  rmSync(file, { force: true });
  const s = new Store(file);
  s.db.pragma('wal_checkpoint(TRUNCATE)');
  s.close();
  return file;
}
