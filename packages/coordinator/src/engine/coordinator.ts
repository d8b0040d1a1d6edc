/**
 * The coordinator service, wired from rooms that each do one job:
 *   write-queue.ts     group commit of agent messages
 *   audit.ts           the event log (and the webhook outbox)
 *   agent-hub.ts       agent websockets: auth, live status, messages in, commands out
 *   fleet-view.ts      pure functions of live status, node rows and time
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
 * 'fleet' (an agent's status or link changed) and 'progress' (an agent reported a step).
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
  private readonly fleetSettings: FleetSettings;

  constructor(
    readonly config: Config,
    readonly store: Store,
    readonly log: Logger,
    readonly now: () => number = Date.now,
    timers: Timers = realTimers,
  ) {
    super();
    this.fleetSettings = { validators: config.validators, heartbeatTimeoutMs: config.heartbeat.timeoutMs, syncDistance: config.defaults.syncDistance };
    this.webhooks = new WebhookSender(store, config.webhooks, config.webhookRetry, log, (o) => this.emit('webhook', o));
    // The loop is created below; the queue and the hub only ever call it later, from a message or a timer.
    const wake = () => this.loop.scheduleTick();
    this.writes = new WriteQueue(store, timers, log, wake);
    this.audit = new Audit(store, this.webhooks, now);
    this.hub = new AgentHub({
      store, writes: this.writes, audit: this.audit, log, now, timers, heartbeatIntervalMs: config.heartbeat.intervalMs, wake,
      notify: (event, detail) => this.emit(event, detail),
    });
    this.loop = new RolloutLoop({
      store, writes: this.writes, audit: this.audit, log,
      effects: { now, timers, agents: this.hub },
      settings: { tickMs: config.tickMs, fleet: this.fleetSettings, windows: config.windows },
      notify: (id) => this.emit('rollout', id),
    });
    const fleet = () => this.fleetView();
    this.nodes = new NodeRegistry({ store, writes: this.writes, audit: this.audit, hub: this.hub, fleet, now });
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

  /** The fleet watch: skew, diverging heights, nodes down. */
  fleetWatch(now = this.now()): FleetWatch {
    return fleetWatch(this.fleetView(now), this.store.openCommands(), this.fleetSettings);
  }
}
