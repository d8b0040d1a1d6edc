/**
 * The coordinator service, wired from rooms that each do one job:
 *   write-queue.ts     group commit of agent messages
 *   audit.ts           the event log (and the webhook outbox)
 *   agent-hub.ts       agent websockets: auth, live status, messages in, commands out
 *   fleet-view.ts      pure functions of live status, node rows and time
 *   chain-view.ts      what the agents say of the chain, believed when f + 1 agree
 *   node-registry.ts   register, remove and list nodes
 *   operators.ts       operator tokens and roles
 *   rollout-service.ts create and plan rollouts, operator actions
 *   rollout-loop.ts    the tick: sequencer decisions applied, commands delivered
 * Every change is written to SQLite in one transaction before anything goes on the wire.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Store } from '../db.js';
import type { FleetView } from '../model.js';
import { WebhookSender } from '../webhooks.js';
import { AgentHub } from './agent-hub.js';
import { ChainTracker } from './chain-view.js';
import { Audit } from './audit.js';
import { realTimers, type Timers } from './effects.js';
import { fleetWatch, type FleetSettings, type FleetWatch } from './fleet-view.js';
import { NodeRegistry } from './node-registry.js';
import { Operators } from './operators.js';
import { RolloutLoop } from './rollout-loop.js';
import { RolloutService } from './rollout-service.js';
import { WriteQueue } from './write-queue.js';

export type { RolloutInput } from './rollout-service.js';
// Kept from the engine's old exports: the package's public surface does not change with the split.
export { PROTOCOL_VERSION } from '@guts-upgrade/protocol';

/**
 * Emits 'webhook' (outcome of each delivery attempt), 'rollout' (id of a rollout the loop changed),
 * 'fleet' (an agent's status or link changed), 'progress' (an agent reported a step), 'result'
 * (a command's result was recorded, once per command: a ResultEvent), 'handshake-refused' (an agent
 * handshake without valid credentials: its RefusalReason) and 'agent-rate-limited' (the id of an
 * agent cut off for sending too many messages).
 */
export class Coordinator extends EventEmitter {
  readonly webhooks: WebhookSender;
  readonly writes: WriteQueue;
  readonly audit: Audit;
  readonly hub: AgentHub;
  readonly loop: RolloutLoop;
  readonly nodes: NodeRegistry;
  readonly rollouts: RolloutService;
  readonly operators: Operators;
  readonly chain: ChainTracker;
  private readonly fleetSettings: FleetSettings;

  constructor(
    readonly config: Config,
    readonly store: Store,
    readonly log: Logger,
    readonly now: () => number = Date.now,
    timers: Timers = realTimers,
  ) {
    super();
    this.fleetSettings = {
      validators: config.validators,
      heartbeatTimeoutMs: config.heartbeat.timeoutMs,
      syncDistance: config.defaults.syncDistance,
      chain: config.chain,
    };
    this.chain = new ChainTracker({ load: () => store.chainState(), save: (adopted, confirmed) => store.saveChainState(adopted, confirmed, now()) });
    this.webhooks = new WebhookSender(store, config.webhooks, config.webhookRetry, log, (o) => this.emit('webhook', o));
    // The loop is created below; the queue and the hub only ever call it later, from a message or a timer.
    const wake = () => this.loop.scheduleTick();
    this.writes = new WriteQueue(store, timers, log, wake);
    this.audit = new Audit(store, this.webhooks, now);
    this.hub = new AgentHub({
      store,
      writes: this.writes,
      audit: this.audit,
      log,
      now,
      timers,
      heartbeatIntervalMs: config.heartbeat.intervalMs,
      messageLimit: config.limits.agentMessages,
      refusedLogIntervalMs: config.limits.refusedLogIntervalMs,
      wake,
      notify: (event, detail) => this.emit(event, detail),
      chain: this.chain,
    });
    this.loop = new RolloutLoop({
      store,
      writes: this.writes,
      audit: this.audit,
      log,
      effects: { now, timers, agents: this.hub },
      chain: this.chain,
      settings: { tickMs: config.tickMs, fleet: this.fleetSettings, windows: config.windows },
      notify: (id) => this.emit('rollout', id),
    });
    const fleet = () => this.fleetView();
    this.nodes = new NodeRegistry({
      store,
      writes: this.writes,
      audit: this.audit,
      hub: {
        track: (id) => this.hub.track(id),
        forget: (id) => {
          this.hub.forget(id);
          this.chain.forget(id);
        },
      },
      fleet,
      now,
      chainSet: () => this.chain.set,
    });
    this.operators = new Operators(config.operators);
    this.rollouts = new RolloutService({ store, writes: this.writes, audit: this.audit, config, fleet, now, tick: () => this.loop.tick() });
  }

  start(): void {
    this.loop.start();
    this.webhooks.start(Math.min(200, this.config.tickMs));
  }

  async stop(): Promise<void> {
    this.loop.stop();
    // A graceful stop keeps what was queued (the store is closed after this).
    this.writes.stop();
    this.webhooks.stop();
    this.hub.stop();
  }

  fleetView(now = this.now()): FleetView {
    return this.loop.fleetView(now);
  }

  /** The validator sets the agents report now, by digest (what `guts-upgrade chain confirm` takes). */
  reportedSets(): { digest: string; epoch: number; nodes: string[] }[] {
    return [...this.chain.reportedDigests()].map(([digest, g]) => ({ digest, epoch: g.set.epoch, nodes: g.nodes.sort() }));
  }

  /** An operator believes a reported set that too few managed validators report; recorded in the audit log. */
  confirmSet(digest: string, actor: string): { epoch: number } | null {
    const set = this.writes.tx(() => {
      const s = this.chain.confirm(digest);
      if (s) this.audit.record('chain.confirmed', actor, null, null, { digest, epoch: s.epoch });
      return s;
    });
    this.loop.scheduleTick();
    return set ? { epoch: set.epoch } : null;
  }

  /** The fleet watch: skew, diverging heights, nodes down. */
  fleetWatch(now = this.now()): FleetWatch {
    return fleetWatch(this.fleetView(now), this.store.openCommands(), this.fleetSettings);
  }
}
