/**
 * Prometheus metrics. Gauges are computed from the fleet watch and the store at
 * scrape time; counters and the downtime histogram are fed by the coordinator's
 * events and only ever grow (a restart starts them again at zero, which rate()
 * and increase() handle). docs/observability.md lists every name.
 */
import { COMMAND_KINDS, OUTCOMES } from '@guts-upgrade/protocol';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { ResultEvent } from './engine/agent-hub.js';
import type { Coordinator } from './engine/coordinator.js';
import type { FleetWatch } from './engine/fleet-view.js';
import { REFUSAL_REASONS } from './engine/refusal-log.js';
import { PerNodeHistogram } from './per-node-histogram.js';
import { ACTIVE_ROLLOUT_STATES, STEP_STATES } from './states.js';
import { PRODUCT_VERSION } from './version.js';

/** Webhook attempt outcomes, listed so each series exists (at 0) before its first attempt. */
const WEBHOOK_OUTCOMES = ['delivered', 'retry', 'dead'] as const;

/** Who an API request was counted against: an operator's token, or (no known token) the client's address. */
export const API_CLIENTS = ['operator', 'address'] as const;
export type ApiClient = (typeof API_CLIENTS)[number];

/**
 * Downtime buckets, seconds: a patch restart takes a second or two, a migration
 * minutes; past 30 minutes the exact figure no longer changes what anyone does.
 */
export const DOWNTIME_BUCKETS = [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800];

export class Metrics {
  readonly registry = new Registry();
  private readonly apiLimited: Counter<'client'>;
  private readonly downtime: PerNodeHistogram;
  private readonly fleetScrape: { begin(): void; end(): void };

  constructor(coordinator: Coordinator) {
    const r = this.registry;
    // process_cpu_*_seconds_total, process_resident_memory_bytes, process_start_time_seconds, nodejs_heap_*:
    // the standard names, so the usual Node.js dashboards and alerts work on the coordinator too.
    collectDefaultMetrics({ register: r });
    new Gauge({
      name: 'guts_upgrade_build_info',
      help: 'The coordinator build (value 1): its version and the Node.js runtime it runs on',
      labelNames: ['version', 'node'],
      registers: [r],
    }).set({ version: PRODUCT_VERSION, node: process.version }, 1);
    this.fleetScrape = fleetMetrics(r, coordinator);
    rolloutMetrics(r, coordinator);
    this.downtime = eventMetrics(r, coordinator);
    limitMetrics(r, coordinator);
    this.apiLimited = new Counter({
      name: 'guts_upgrade_api_rate_limited_total',
      help: 'API requests refused with 429 E_RATE_LIMITED, by who they were counted against: an operator token or a client address',
      labelNames: ['client'],
      registers: [r],
    });
    for (const client of API_CLIENTS) this.apiLimited.inc({ client }, 0);
  }

  /** Counts one API request refused by the rate limit (the API calls it). */
  apiRateLimited(client: ApiClient): void {
    this.apiLimited.inc({ client });
  }

  /** The registry's metrics, then the downtime histogram's block, separated by a blank line as the registry separates its own. */
  async render(): Promise<string> {
    this.fleetScrape.begin();
    try {
      return `${await this.registry.metrics()}\n${this.downtime.text()}\n`;
    } finally {
      this.fleetScrape.end();
    }
  }
}

/**
 * The fleet and the chain as the agents report them. Every gauge reads the same fleet view,
 * computed once per scrape (`scrape.begin()` before the registry collects, `end()` after):
 * computing it per gauge, fifteen times over 2,000 nodes, made a scrape slower by a fifth (scale bench: median 141 -> 118 ms).
 */
function fleetMetrics(r: Registry, c: Coordinator): { begin(): void; end(): void } {
  let current: FleetWatch | null = null;
  const fleet = (): FleetWatch => current ?? c.fleetWatch();
  new Gauge({
    name: 'guts_upgrade_validators',
    help: 'Validator-set size n',
    registers: [r],
    collect() {
      this.set(fleet().n);
    },
  });
  new Gauge({
    name: 'guts_upgrade_fault_tolerance',
    help: 'f = floor((n-1)/3)',
    registers: [r],
    collect() {
      this.set(fleet().f);
    },
  });
  new Gauge({
    name: 'guts_upgrade_disruption_budget',
    help: 'Nodes that may still be taken down now',
    registers: [r],
    collect() {
      this.set(fleet().disruptionBudget);
    },
  });
  // The chain's own budget, in voting weight (absent until the agents report the chain's set).
  new Gauge({
    name: 'guts_upgrade_chain_slack',
    help: 'Voting weight proven live beyond the quorum weight, after the commands in flight',
    registers: [r],
    collect() {
      this.reset();
      const ch = fleet().chain;
      if (ch) this.set(ch.slackAfterInFlight ?? ch.slack);
    },
  });
  new Gauge({
    name: 'guts_upgrade_chain_slack_margin',
    help: 'Voting weight the coordinator keeps in reserve beyond the quorum before it takes a node down (config chain.slackMargin)',
    registers: [r],
    collect() {
      this.reset();
      const ch = fleet().chain;
      if (ch) this.set(ch.margin);
    },
  });
  new Gauge({
    name: 'guts_upgrade_chain_quorum_weight',
    help: "The chain's quorum weight in the adopted validator set",
    registers: [r],
    collect() {
      this.reset();
      const ch = fleet().chain;
      if (ch) this.set(ch.quorumWeight);
    },
  });
  new Gauge({
    name: 'guts_upgrade_chain_validator_live',
    help: 'Validator proven live by finalized blocks (1) or not (0)',
    labelNames: ['validator', 'managed'],
    registers: [r],
    collect() {
      this.reset();
      for (const v of fleet().chain?.validators ?? []) this.set({ validator: v.name, managed: v.managed ? 'yes' : 'no' }, v.live ? 1 : 0);
    },
  });
  // With the slack it tells whether any managed validator can be taken down at all (the slack-exhausted alert).
  new Gauge({
    name: 'guts_upgrade_chain_validator_weight',
    help: "Validator's voting weight in the adopted set",
    labelNames: ['validator', 'managed'],
    registers: [r],
    collect() {
      this.reset();
      for (const v of fleet().chain?.validators ?? []) this.set({ validator: v.name, managed: v.managed ? 'yes' : 'no' }, v.weight);
    },
  });
  new Gauge({
    name: 'guts_upgrade_nodes_down',
    help: 'Registered nodes not healthy',
    registers: [r],
    collect() {
      this.set(fleet().down.length);
    },
  });
  new Gauge({
    name: 'guts_upgrade_version_skew',
    help: 'Distinct guts-node versions running in the fleet',
    registers: [r],
    collect() {
      this.set(Object.keys(fleet().versions).length);
    },
  });
  new Gauge({
    name: 'guts_upgrade_finalized_height_spread',
    help: 'Max minus min finalized height among healthy nodes',
    registers: [r],
    collect() {
      this.set(fleet().heights.spread);
    },
  });
  new Gauge({
    name: 'guts_upgrade_node_up',
    help: 'Node healthy (1) or not (0)',
    labelNames: ['node'],
    registers: [r],
    collect() {
      this.reset();
      for (const n of fleet().nodes) this.set({ node: n.id }, n.healthy ? 1 : 0);
    },
  });
  new Gauge({
    name: 'guts_upgrade_node_version_info',
    help: 'Version a node runs (value 1)',
    labelNames: ['node', 'version'],
    registers: [r],
    collect() {
      this.reset();
      for (const n of fleet().nodes) if (n.version) this.set({ node: n.id, version: n.version }, 1);
    },
  });
  new Gauge({
    name: 'guts_upgrade_node_finalized_height',
    help: 'Finalized height reported by each node',
    labelNames: ['node'],
    registers: [r],
    collect() {
      this.reset();
      for (const n of fleet().nodes) if (n.finalizedHeight != null) this.set({ node: n.id }, n.finalizedHeight);
    },
  });
  return {
    begin: () => {
      current = c.fleetWatch();
    },
    end: () => {
      current = null;
    },
  };
}

/** Rollouts: how many in each state, and the progress of each one still under way. */
function rolloutMetrics(r: Registry, c: Coordinator): void {
  const active = () => c.store.rolloutsInStates(ACTIVE_ROLLOUT_STATES);
  new Gauge({
    name: 'guts_upgrade_rollouts',
    help: 'Rollouts by state',
    labelNames: ['state'],
    registers: [r],
    collect() {
      this.reset();
      for (const [state, n] of Object.entries(c.rollouts.countByState())) this.set({ state }, n);
    },
  });
  new Gauge({
    name: 'guts_upgrade_rollout_info',
    help: 'A rollout under way (value 1): its state, strategy and target version',
    labelNames: ['rollout', 'state', 'strategy', 'target'],
    registers: [r],
    collect() {
      this.reset();
      for (const ro of active()) this.set({ rollout: ro.id, state: ro.state, strategy: ro.strategy, target: ro.target.version }, 1);
    },
  });
  // Every step state listed (0 included), so done / total is one division in a dashboard.
  new Gauge({
    name: 'guts_upgrade_rollout_nodes',
    help: "Nodes of a rollout under way, by their step's state",
    labelNames: ['rollout', 'state'],
    registers: [r],
    collect() {
      this.reset();
      for (const ro of active()) {
        const counts = new Map<string, number>(STEP_STATES.map((s) => [s, 0]));
        for (const s of c.store.steps(ro.id)) counts.set(s.state, (counts.get(s.state) ?? 0) + 1);
        for (const [state, n] of counts) this.set({ rollout: ro.id, state }, n);
      }
    },
  });
  new Gauge({
    name: 'guts_upgrade_rollout_paused',
    help: 'A rollout under way is paused (1) or not (0): it waits for an operator',
    labelNames: ['rollout'],
    registers: [r],
    collect() {
      this.reset();
      for (const ro of active()) this.set({ rollout: ro.id }, ro.state === 'paused' ? 1 : 0);
    },
  });
  new Gauge({
    name: 'guts_upgrade_rollout_waiting',
    help: 'A rollout under way holds its next dispatch for the network slack (1) or not (0)',
    labelNames: ['rollout'],
    registers: [r],
    collect() {
      this.reset();
      for (const ro of active()) this.set({ rollout: ro.id }, ro.data.waiting ? 1 : 0);
    },
  });
}

/** Counters and the downtime histogram (written out by render(), see per-node-histogram.ts), fed once per recorded result or webhook attempt. */
function eventMetrics(r: Registry, c: Coordinator): PerNodeHistogram {
  const results = new Counter({
    name: 'guts_upgrade_command_results_total',
    help: 'Command results recorded since the coordinator started, by command kind and outcome',
    labelNames: ['kind', 'outcome'],
    registers: [r],
  });
  for (const kind of COMMAND_KINDS) for (const outcome of OUTCOMES) results.inc({ kind, outcome }, 0);
  const downtime = new PerNodeHistogram(
    'guts_upgrade_node_downtime_seconds',
    'Stop-to-ready time of a node in a command, as its agent measured it',
    'node',
    DOWNTIME_BUCKETS,
  );
  c.on('result', (e: ResultEvent) => {
    results.inc({ kind: e.kind, outcome: e.outcome });
    if (e.downtimeMs !== null) downtime.observe(e.nodeId, e.downtimeMs / 1000);
  });
  const webhooks = new Counter({
    name: 'guts_upgrade_webhook_attempts_total',
    help: 'Webhook delivery attempts by outcome: delivered, retry (failed, retried later) or dead (failed, given up)',
    labelNames: ['outcome'],
    registers: [r],
  });
  for (const outcome of WEBHOOK_OUTCOMES) webhooks.inc({ outcome }, 0);
  c.on('webhook', (o: string) => webhooks.inc({ outcome: o }));
  return downtime;
}

/** What the hub refused or cut off: counted here instead of written to the database (refusal-log.ts). */
function limitMetrics(r: Registry, c: Coordinator): void {
  const refused = new Counter({
    name: 'guts_upgrade_handshakes_refused_total',
    help: 'Agent websocket handshakes refused for missing, unknown, revoked or wrong credentials, by reason',
    labelNames: ['reason'],
    registers: [r],
  });
  for (const reason of REFUSAL_REASONS) refused.inc({ reason }, 0);
  c.on('handshake-refused', (reason: string) => refused.inc({ reason }));
  const cut = new Counter({
    name: 'guts_upgrade_agent_rate_limited_total',
    help: 'Agent connections closed for sending more messages than limits.agentMessages allows, by node',
    labelNames: ['node'],
    registers: [r],
  });
  c.on('agent-rate-limited', (node: string) => cut.inc({ node }));
}
