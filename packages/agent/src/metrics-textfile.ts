/**
 * The agent's own metrics in node_exporter's textfile format: the agent has no
 * port of its own to scrape, and every validator host already runs
 * node_exporter, whose textfile collector picks up *.prom files from a
 * directory. The file is rewritten whole after each command result and every
 * metrics.intervalMs, always through a temporary file in the same directory and
 * a rename, so node_exporter never reads half a file.
 *
 * Counters come from the journal (never pruned), so they survive a restart of
 * the agent. docs/observability.md lists every name.
 */
import fs from 'node:fs';
import path from 'node:path';
import semver from 'semver';
import { CodedError } from '@guts-upgrade/protocol';
import type { Agent } from './agent.js';
import { PRODUCT_VERSION } from './version.js';

/** Everything one write of the file shows. */
export interface AgentMetricsSnapshot {
  nodeId: string;
  agentVersion: string;
  runtime: string;
  /** Unix seconds. */
  startedAt: number;
  writtenAt: number;
  busy: boolean;
  results: { kind: string; outcome: string; count: number }[];
  last: { kind: string; outcome: string; code: string | null; finishedAt: number } | null;
  lastDowntimeSeconds: number | null;
  /** The version guts-node reports on /health, or null when it does not answer. */
  nodeVersion: string | null;
  nodeUp: boolean;
  backups: { status: string; count: number; bytes: number }[];
}

interface Family {
  name: string;
  type: 'gauge' | 'counter';
  help: string;
  samples: { labels?: Record<string, string>; value: number }[];
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function line(name: string, labels: Record<string, string> | undefined, value: number): string {
  const l =
    labels && Object.keys(labels).length > 0
      ? `{${Object.entries(labels)
          .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
          .join(',')}}`
      : '';
  return `${name}${l} ${Number.isInteger(value) ? value : value.toFixed(3)}`;
}

/** The families of one snapshot; a family with nothing to say yet (no result so far) has no sample. */
export function agentFamilies(s: AgentMetricsSnapshot): Family[] {
  const node = { node_id: s.nodeId };
  return [
    {
      name: 'guts_upgrade_agent_build_info',
      type: 'gauge',
      help: 'The agent build (value 1): its version, the Node.js runtime and the node id it serves',
      samples: [{ labels: { ...node, version: s.agentVersion, node: s.runtime }, value: 1 }],
    },
    {
      name: 'guts_upgrade_agent_start_time_seconds',
      type: 'gauge',
      help: 'When the agent process started, Unix seconds (uptime is time() minus this)',
      samples: [{ labels: node, value: s.startedAt }],
    },
    {
      // node_exporter keeps serving a file whose writer died: this is how an alert tells it is stale.
      name: 'guts_upgrade_agent_textfile_timestamp_seconds',
      type: 'gauge',
      help: 'When the agent wrote this file, Unix seconds',
      samples: [{ labels: node, value: s.writtenAt }],
    },
    {
      name: 'guts_upgrade_agent_busy',
      type: 'gauge',
      help: 'A command is running on this node (1) or not (0)',
      samples: [{ labels: node, value: s.busy ? 1 : 0 }],
    },
    {
      name: 'guts_upgrade_agent_commands_total',
      type: 'counter',
      help: 'Commands this agent finished, by kind (prepare, upgrade, rollback) and outcome (succeeded, rolled_back, failed)',
      samples: s.results.map((r) => ({ labels: { ...node, kind: r.kind, outcome: r.outcome }, value: r.count })),
    },
    {
      name: 'guts_upgrade_agent_last_result_info',
      type: 'gauge',
      help: 'The last command result (value 1): its kind, outcome and error code',
      samples: s.last ? [{ labels: { ...node, kind: s.last.kind, outcome: s.last.outcome, code: s.last.code ?? '' }, value: 1 }] : [],
    },
    {
      name: 'guts_upgrade_agent_last_result_timestamp_seconds',
      type: 'gauge',
      help: 'When the last command finished, Unix seconds',
      samples: s.last ? [{ labels: node, value: s.last.finishedAt }] : [],
    },
    {
      name: 'guts_upgrade_agent_last_downtime_seconds',
      type: 'gauge',
      help: 'Stop-to-ready time of the node in the last command that stopped it',
      samples: s.lastDowntimeSeconds !== null ? [{ labels: node, value: s.lastDowntimeSeconds }] : [],
    },
    {
      name: 'guts_upgrade_agent_node_up',
      type: 'gauge',
      help: 'guts-node answers /health (1) or not (0)',
      samples: [{ labels: node, value: s.nodeUp ? 1 : 0 }],
    },
    {
      name: 'guts_upgrade_agent_node_version_info',
      type: 'gauge',
      help: 'The version guts-node reports (value 1)',
      samples: s.nodeVersion ? [{ labels: { ...node, version: s.nodeVersion }, value: 1 }] : [],
    },
    {
      name: 'guts_upgrade_agent_backups',
      type: 'gauge',
      help: 'Backups kept on this host, by status (complete, partial)',
      samples: s.backups.map((b) => ({ labels: { ...node, status: b.status }, value: b.count })),
    },
    {
      name: 'guts_upgrade_agent_backup_bytes',
      type: 'gauge',
      help: 'Size of the archives of the backups kept on this host, by status',
      samples: s.backups.map((b) => ({ labels: { ...node, status: b.status }, value: b.bytes })),
    },
  ];
}

/** Prometheus text exposition of a snapshot; every family is declared (HELP, TYPE) even without a sample yet. */
export function renderAgentMetrics(s: AgentMetricsSnapshot): string {
  const out: string[] = [];
  for (const f of agentFamilies(s)) {
    out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
    for (const x of f.samples) out.push(line(f.name, x.labels, x.value));
  }
  return `${out.join('\n')}\n`;
}

/**
 * Replaces `file` with `text` atomically: a temporary file in the same directory
 * (a rename across file systems is not atomic), named so node_exporter skips it
 * (not *.prom), then a rename over the old file.
 */
export function writeAtomically(file: string, text: string): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    fs.writeFileSync(tmp, text);
    fs.chmodSync(tmp, 0o644); // node_exporter's user reads it; the agent's umask (0077) would not let it
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw new CodedError('E_CONFIG', `config metrics.textfile: cannot write ${file}: ${(err as Error).message}`, { key: 'metrics.textfile' });
  }
}

/** What `run` checks before it starts: the textfile's directory exists and the agent may write there. */
export function checkTextfileDir(file: string): void {
  const dir = path.dirname(file);
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new CodedError('E_CONFIG', `config metrics.textfile: directory ${dir} does not exist (node_exporter's --collector.textfile.directory)`, {
      key: 'metrics.textfile',
    });
  }
  if (!st.isDirectory()) throw new CodedError('E_CONFIG', `config metrics.textfile: ${dir} is not a directory`, { key: 'metrics.textfile' });
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    throw new CodedError('E_CONFIG', `config metrics.textfile: directory ${dir} is not writable by the agent`, { key: 'metrics.textfile' });
  }
}

const seconds = (iso: string) => Date.parse(iso) / 1000;

/** Reads one snapshot from the agent: its journal, its backups and one /health call to the node. */
export async function agentSnapshot(agent: Agent, startedAt: number, now = Date.now()): Promise<AgentMetricsSnapshot> {
  const health = await agent.node.health();
  const v = health?.body?.version;
  const last = agent.journal.recentResults(1)[0] ?? null;
  const downtime = agent.journal.lastDowntime();
  const backups = new Map<string, { count: number; bytes: number }>();
  for (const b of agent.backups.list()) {
    const m = b.meta;
    const bytes = [m.binary, m.config, m.dataBase, m.dataDelta].reduce((sum, e) => sum + (e?.size ?? 0), 0);
    const acc = backups.get(b.status) ?? { count: 0, bytes: 0 };
    backups.set(b.status, { count: acc.count + 1, bytes: acc.bytes + bytes });
  }
  return {
    nodeId: agent.config.nodeId,
    agentVersion: PRODUCT_VERSION,
    runtime: process.version,
    startedAt: startedAt / 1000,
    writtenAt: now / 1000,
    busy: agent.busy() !== null,
    results: agent.journal.resultCounts(),
    last: last ? { kind: last.kind, outcome: last.outcome, code: last.code ?? null, finishedAt: seconds(last.finishedAt) } : null,
    lastDowntimeSeconds: downtime?.downtimeMs !== undefined ? downtime.downtimeMs / 1000 : null,
    nodeVersion: typeof v === 'string' ? semver.valid(v.replace(/^v/, '')) : null,
    nodeUp: health !== null && health.status === 200,
    backups: [...backups].map(([status, b]) => ({ status, ...b })),
  };
}

/**
 * Keeps the textfile current while the daemon runs. Writes never overlap (a
 * request during a write is folded into one more write after it), and a failed
 * write is logged, never fatal: metrics must not stop an upgrade.
 */
export class TextfileWriter {
  private timer: NodeJS.Timeout | null = null;
  private writing: Promise<void> | null = null;
  private again = false;
  private readonly startedAt = Date.now();
  private unlisten: (() => void) | null = null;

  constructor(
    private readonly agent: Agent,
    private readonly file: string,
    private readonly intervalMs: number,
  ) {}

  /** Writes once now, then after every result and every intervalMs. */
  start(): Promise<void> {
    this.unlisten = this.agent.addListener({ result: () => void this.write() });
    this.timer = setInterval(() => void this.write(), this.intervalMs);
    this.timer.unref();
    return this.write();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.unlisten?.();
  }

  /** One write (or the one already under way, followed by another). */
  write(): Promise<void> {
    if (this.writing) {
      this.again = true;
      return this.writing;
    }
    this.writing = (async () => {
      do {
        this.again = false;
        try {
          writeAtomically(this.file, renderAgentMetrics(await agentSnapshot(this.agent, this.startedAt)));
        } catch (err) {
          this.agent.log.warn({ err: (err as Error).message, file: this.file }, 'metrics textfile not written');
        }
      } while (this.again);
    })().finally(() => {
      this.writing = null;
    });
    return this.writing;
  }
}
