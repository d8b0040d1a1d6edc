/**
 * The observability pack against the real parts: a coordinator on loopback
 * serves /metrics, a real agent writes its node_exporter textfile, and the
 * Grafana dashboard and the Prometheus alert rules may only name metrics one of
 * the two exports. promtool (Debian's prometheus package; .ci/run installs it)
 * checks both expositions, the rules, and the rules' unit tests.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import YAML from 'yaml';
import { pino } from 'pino';
import { Agent, resolveConfig, TextfileWriter } from '@guts-upgrade/agent';
import { api, buildConfig, startCoordinator } from '@guts-upgrade/coordinator';
import { exportedSeries, metricNames, unknownNames } from '../src/observability/promql.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const DASHBOARD = path.join(ROOT, 'deploy/grafana/guts-upgrade.json');
const RULES_DIR = path.join(ROOT, 'deploy/prometheus');

interface Ran {
  status: number | null;
  out: string;
}

/** promtool, which must be there: CI installs it, so a missing one is a failure, not a skip. */
function promtool(args: string[], input?: string): Ran {
  const r = spawnSync('promtool', args, { cwd: RULES_DIR, input, encoding: 'utf8' });
  if (r.error) throw new Error(`promtool did not run (${r.error.message}): install it with apt-get install prometheus (.ci/run does)`);
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

async function coordinatorExposition(): Promise<string> {
  const dir = mkdtempSync(path.join(tmpdir(), 'guts-obs-coord-'));
  const c = await startCoordinator(
    buildConfig({
      listen: { host: '127.0.0.1', port: 0, socket: null },
      db: path.join(dir, 'c.db'),
      operators: [{ name: 'alice', token: 'operator-token-0123456789', role: 'operator' }],
    }),
    { log: pino({ level: 'silent' }) },
  );
  try {
    return await api<string>({ url: c.url! }, 'GET', '/metrics');
  } finally {
    await c.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function agentExposition(): Promise<string> {
  const dir = mkdtempSync(path.join(tmpdir(), 'guts-obs-agent-'));
  const file = path.join(dir, 'guts_upgrade_agent.prom');
  // No guts-node answers on port 1: the file says so (node_up 0) instead of failing.
  const config = resolveConfig(
    { nodeId: 'v0', stateDir: 'state', service: { driver: 'process' }, node: { apiUrl: 'http://127.0.0.1:1', metricsUrl: null }, metrics: { textfile: file } },
    {},
    dir,
  );
  const agent = new Agent(config, pino({ level: 'silent' }));
  try {
    await new TextfileWriter(agent, file, 60_000).write();
    return readFileSync(file, 'utf8');
  } finally {
    agent.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

t.test('dashboard and alert rules name only exported metrics; promtool accepts all of it', async (t) => {
  const coordinator = await coordinatorExposition();
  const agent = await agentExposition();
  for (const [name, text] of [
    ['coordinator /metrics', coordinator],
    ['agent textfile', agent],
  ] as const) {
    // prom-client's own default gauges nodejs_active_{handles,requests,resources}_total are misnamed
    // upstream; they are the only findings allowed, so a misnamed metric of ours still fails.
    const r = promtool(['check', 'metrics'], text);
    const findings = r.out
      .split('\n')
      .filter((l) => l.trim() !== '' && !/^nodejs_active_\w+_total non-counter metrics should not have "_total" suffix$/.test(l.trim()));
    t.same(findings, [], `promtool check metrics: ${name}`);
  }
  t.match(coordinator, /^guts_upgrade_build_info\{version="[^"]+",node="v\d+[^"]*"\} 1$/m, 'build info');
  t.match(coordinator, /^# TYPE guts_upgrade_command_results_total counter$/m, 'command results are a counter');
  t.match(coordinator, /^# TYPE guts_upgrade_node_downtime_seconds histogram$/m);
  for (const m of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'nodejs_heap_size_used_bytes'])
    t.match(coordinator, new RegExp(`^${m} `, 'm'), m);
  t.match(agent, /^guts_upgrade_agent_node_up\{node_id="v0"\} 0$/m, 'the agent reports the node down');
  const exported = new Set([...exportedSeries(coordinator), ...exportedSeries(agent)]);
  for (const line of `${coordinator}${agent}`.split('\n').filter((l) => /^# TYPE \S+ counter$/.test(l)))
    t.match(line, /_total counter$/, `every counter ends in _total: ${line}`);

  // The check itself can fail: a misspelt name is caught, a histogram's _bucket is not one.
  t.same(
    unknownNames(['sum(rate(guts_upgrade_comand_results_total{kind="upgrade"}[5m]))'], exported).map((u) => u.name),
    ['guts_upgrade_comand_results_total'],
  );
  t.same(metricNames('histogram_quantile(0.95, sum by (le) (rate(guts_upgrade_node_downtime_seconds_bucket[$__range])))'), [
    'guts_upgrade_node_downtime_seconds_bucket',
  ]);

  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: { title: string; targets?: { expr: string }[] }[] };
  const panelExprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((x) => x.expr));
  t.ok(panelExprs.length >= 20, `the dashboard has queries (${panelExprs.length})`);
  t.same(unknownNames(panelExprs, exported), [], 'every dashboard query names exported metrics');

  const rules = YAML.parse(readFileSync(path.join(RULES_DIR, 'guts-upgrade.rules.yml'), 'utf8')) as {
    groups: { rules: { alert: string; expr: string; for?: string; labels?: { severity?: string }; annotations?: Record<string, string> }[] }[];
  };
  const alerts = rules.groups.flatMap((g) => g.rules);
  for (const a of alerts) {
    t.ok(a.for && a.labels?.severity && a.annotations?.summary && a.annotations.description, `${a.alert}: for, severity, summary, description`);
  }
  t.same(
    unknownNames(
      alerts.map((a) => a.expr),
      exported,
    ),
    [],
    'every alert names exported metrics',
  );

  const check = promtool(['check', 'rules', 'guts-upgrade.rules.yml']);
  t.equal(check.status, 0, `promtool check rules (${check.out.trim()})`);
  const unit = promtool(['test', 'rules', 'guts-upgrade.rules.test.yml']);
  t.equal(unit.status, 0, `promtool test rules (${unit.out.trim()})`);
});
