/** Prometheus metrics, computed from the fleet watch at scrape time. */
import { Counter, Gauge, Registry } from 'prom-client';
import type { Coordinator } from './engine/coordinator.js';

export class Metrics {
  readonly registry = new Registry();
  private readonly webhookTotal: Counter<'outcome'>;

  constructor(coordinator: Coordinator) {
    const r = this.registry;
    const c = coordinator;
    const fleet = () => c.fleetWatch();
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
      name: 'guts_upgrade_node_version',
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
      name: 'guts_upgrade_command_results',
      help: 'Command results received since start',
      labelNames: ['kind', 'outcome'],
      registers: [r],
      collect() {
        this.reset();
        for (const { kind, outcome, count } of c.hub.results.entries()) this.set({ kind, outcome }, count);
      },
    });
    this.webhookTotal = new Counter({
      name: 'guts_upgrade_webhook_attempts_total',
      help: 'Webhook delivery attempts',
      labelNames: ['outcome'],
      registers: [r],
    });
    c.on('webhook', (o: string) => this.webhookTotal.inc({ outcome: o }));
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }
}
