/**
 * The end-to-end scenario harness: a lab of N validator hosts, each running
 * the simulator as the real guts-node.service and the real
 * guts-upgrade-agent.service under its own systemd; the coordinator and the
 * artifact server in the lab netns; a sampler probing every node's health;
 * helpers to drive rollouts through the coordinator's HTTP API and to read
 * what really happened (node histories, coordinator events, agent journals).
 *
 *   root ns (the test) ── lab.forward(7600) ──▶ coordinator 198.18.0.1:7600 (SQLite in scratch)
 *                                               artifact server 198.18.0.1:7700
 *                                               sampler (GET /health of every node)
 *   host vN 198.18.0.(11+N): systemd ─ guts-node.service (simulator launcher at /usr/local/bin/guts-node)
 *                                    └ guts-upgrade-agent.service (wss://lab:7600/agent, the test CA)
 */
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fs, readFileSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import {
  buildArtifacts,
  createReleaseSigner,
  findArtifact,
  launcherSource,
  pubkeyFor,
  readHistory,
  sha256OfFile,
  waitFor,
  type ArtifactManifest,
  type ReleaseSigner,
  type Fault,
  type HistoryEntry,
  type SimTimings,
} from '@guts-upgrade/simulator';
import { api as coordinatorApi, ApiError as ClientApiError } from '@guts-upgrade/coordinator';
import { makeTestTls, type TestTls } from '@guts-upgrade/simulator';
import { isClean, leftovers, provisionGutsNode, REPO_ROOT, sleep, startLab, type Host, type Lab, type Leftovers } from '../testbed/index.js';
import type { EventRow, Sample } from './measure.js';

export const COORD_PORT = 7600;
export const ARTIFACT_PORT = 7700;
export const NODE_API_PORT = 8080;
export const AGENT_CONFIG = '/etc/guts-upgrade/agent.yaml';
/** The test CA on each host, named by the agent's coordinator.caFile. */
export const AGENT_CA_FILE = '/etc/guts-upgrade/ca.crt';
/** The release repository's root, pinned on each host as the runbook says (never fetched from the repository). */
export const AGENT_RELEASE_ROOT = '/etc/guts-upgrade/root.json';
export const AGENT_UNIT = 'guts-upgrade-agent.service';
export const NODE_UNIT = 'guts-node.service';
export const HISTORY_FILE = '/var/lib/guts/history.jsonl';
export const DATA_DIR = '/var/lib/guts/data';
/** Where the agent unit expects the checkout (its ExecStart). */
export const AGENT_INSTALL_DIR = '/opt/guts-upgrade';
export const AGENT_CLI = path.join(REPO_ROOT, 'packages/agent/dist/src/cli.js');
export const COORDINATOR_CLI = path.join(REPO_ROOT, 'packages/coordinator/dist/src/server-cli.js');
export const ARTIFACT_SERVER_CLI = path.join(REPO_ROOT, 'packages/simulator/dist/src/artifact-server-cli.js');

/**
 * Fast simulator timings: blocks every 250 ms, a view per second, quick start
 * and sync; and a restart warms up like today's real guts-node, only shorter:
 * storage opens, the engine says Starting, its peers connect one by one over
 * two seconds, and /health never reports p2p (`unknown` throughout).
 */
export const FAST_TIMINGS: Partial<SimTimings> = {
  startup_delay_ms: 100,
  migrate_ms: 300,
  sync_blocks_per_sec: 2000,
  block_interval_ms: 250,
  leader_term_ms: 1000,
  p2p_timeout_ms: 1000,
  fault_delay_ms: 300,
  storage_open_ms: 200,
  consensus_start_ms: 500,
  p2p_warmup_ms: 2000,
  p2p_report: 'unknown',
};

type Doc = Record<string, unknown>;

export interface ScenarioOptions {
  /** Short label for the scratch dir. */
  name: string;
  hosts: number;
  timings?: Partial<SimTimings>;
  /** Per-section patch of the agent config (sections are merged one level deep). */
  agent?: Doc;
  /** Patch of the coordinator config (sections merged one level deep). */
  coordinator?: Doc;
  /** Version every host starts on (default 1.0.0). */
  startVersion?: string;
}

export interface TapLike {
  teardown(fn: () => unknown): void;
  comment(...args: unknown[]): void;
}

export interface Artifact {
  version: string;
  url: string;
  sha256: string;
}

export interface RolloutDetail {
  rollout: {
    id: string;
    state: string;
    code: string | null;
    reason: string | null;
    nodes: string[];
    waves: string[][];
    strategy: string;
    data: Record<string, unknown>;
  };
  steps: { nodeId: string; state: string; code: string | null; message: string | null; attempt: number; downtimeMs: number | null; commandId: string | null }[];
}

export interface NodeRow {
  id: string;
  connected: boolean;
  healthy: boolean;
  version: string | null;
  ready: boolean;
  finalizedHeight: number | null;
  busy: unknown;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
    what: string,
  ) {
    super(`${what} -> HTTP ${status}: ${JSON.stringify(body)}`);
  }
}

function merge(base: Doc, patch: Doc | undefined): Doc {
  const out: Doc = { ...base };
  for (const [k, v] of Object.entries(patch ?? {})) {
    const b = out[k];
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && b && typeof b === 'object' && !Array.isArray(b) ? { ...(b as Doc), ...(v as Doc) } : v;
  }
  return out;
}

/**
 * The simulator's builds are launchers that import its main.js by absolute
 * path. In a host they run under units with PrivateTmp=yes, which hide the
 * machine's checkout when it lives under /tmp; so they import it from where
 * every host has the checkout installed (AGENT_INSTALL_DIR), as the agent
 * unit runs it. Rewrites the launchers and their manifest in place.
 */
function installedLaunchers(m: ArtifactManifest, outDir: string): ArtifactManifest {
  const mainJs = path.join(AGENT_INSTALL_DIR, path.relative(REPO_ROOT, m.main));
  const artifacts = m.artifacts.map((a) => {
    writeFileSync(a.path, launcherSource({ version: a.version, fault: a.fault, build: a.name, mainJs }), { mode: 0o755 });
    return { ...a, sha256: sha256OfFile(a.path), size: statSync(a.path).size };
  });
  const out: ArtifactManifest = { ...m, main: mainJs, artifacts };
  writeFileSync(path.join(outDir, 'manifest.json'), `${JSON.stringify(out, null, 2)}\n`);
  return out;
}

/** Env for processes we start: without tap's loader hooks and test variables. */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  for (const k of Object.keys(env)) if (k.startsWith('TAP') || k.startsWith('GUTS_')) delete env[k];
  return { ...env, ...extra };
}

/** Polls the lab netns' view of every node: one round = every node probed once, in parallel. */
const SAMPLER = String.raw`
const fs = require('fs');
const [out, intervalMs, ...targets] = process.argv.slice(1);
const fd = fs.openSync(out, 'a');
let round = 0;
async function probe(r, spec) {
  const [name, addr] = spec.split('=');
  const t = Date.now();
  try {
    // /p2p/status, what peers poll: not counted in the node's HTTP metrics, so
    // the probes do not disturb the agent's error-rate check.
    const res = await fetch('http://' + addr + '/p2p/status', { signal: AbortSignal.timeout(2000) });
    const b = await res.json().catch(() => ({}));
    return { r, t, node: name, up: res.status === 200 && b.ready === true && b.syncing !== true, version: b.version ?? null, height: b.finalized_height ?? null };
  } catch (e) {
    // A probe that timed out says the machine is slow, not that the node is
    // down: a stopped node refuses the connection at once. Unknown, not down.
    const timedOut = e && (e.name === 'TimeoutError' || e.name === 'AbortError');
    return { r, t, node: name, up: timedOut ? null : false, version: null };
  }
}
(async () => {
  for (;;) {
    const r = round++;
    const res = await Promise.all(targets.map((s) => probe(r, s)));
    fs.writeSync(fd, res.map((x) => JSON.stringify(x)).join('\n') + '\n');
    await new Promise((ok) => setTimeout(ok, Number(intervalMs)));
  }
})();
`;

export class Scenario {
  coordinator: ChildProcess | null = null;
  coordinatorStarts = 0;
  apiBase = '';
  tls: TestTls | null = null;
  caPem = '';
  /** The release repository the agents trust, served by the artifact server under /release. */
  private releases: ReleaseSigner | null = null;
  /** Wall-clock time the cluster was seen healthy (start of measurements). */
  t0 = 0;

  private constructor(
    readonly lab: Lab,
    readonly opts: ScenarioOptions,
    readonly scratch: string,
    readonly manifest: ArtifactManifest,
    readonly operatorToken: string,
    readonly coordinatorConfigPath: string,
    readonly samplesFile: string,
    readonly dbPath: string,
  ) {}

  get hosts(): readonly Host[] {
    return this.lab.hosts;
  }
  get names(): string[] {
    return this.lab.hosts.map((h) => h.name);
  }
  get f(): number {
    return Math.floor((this.lab.hosts.length - 1) / 3);
  }
  host(name: string): Host {
    return this.lab.host(name);
  }

  /**
   * Boots everything and waits until every node is ready, finalizing, and its
   * agent is connected to the coordinator. Registers teardown on `t`.
   */
  static async start(t: TapLike, opts: ScenarioOptions): Promise<Scenario> {
    for (const f of [AGENT_CLI, COORDINATOR_CLI, ARTIFACT_SERVER_CLI]) {
      if (!existsSync(f)) throw new Error(`${f} is missing: build with \`npx tsc -b\` first`);
    }
    const scratch = await fs.mkdtemp(path.join(os.tmpdir(), `gs-${opts.name}-`));
    // GUTS_E2E_KEEP=1 keeps the scratch dir (coordinator db and logs, samples) for a post-mortem.
    const keep = !!process.env.GUTS_E2E_KEEP;
    const dropScratch = async (): Promise<void> => {
      if (keep) t.comment(`scratch kept in ${scratch}`);
      else await fs.rm(scratch, { recursive: true, force: true });
    };
    let lab: Lab;
    let manifest: ArtifactManifest;
    try {
      manifest = installedLaunchers(buildArtifacts({ outDir: path.join(scratch, 'artifacts') }), path.join(scratch, 'artifacts'));
      const names = Array.from({ length: opts.hosts }, (_, i) => `v${i}`);
      lab = await startLab({ hosts: names, scratchDir: path.join(scratch, 'lab'), tmpfsSize: '256m' });
    } catch (err) {
      await dropScratch();
      throw err;
    }
    // Registered right away: whatever fails below, the lab goes first, then its scratch dir.
    t.teardown(async () => {
      try {
        await lab.teardown();
      } finally {
        await dropScratch();
      }
    });
    const token = randomBytes(24).toString('hex');
    const s = new Scenario(
      lab,
      opts,
      scratch,
      manifest,
      token,
      path.join(scratch, 'coordinator.yaml'),
      path.join(scratch, 'samples.jsonl'),
      path.join(scratch, 'coordinator.db'),
    );
    await s.boot();
    return s;
  }

  private async boot(): Promise<void> {
    const lab = this.lab;
    // Artifact server in the lab netns.
    lab.spawnInLab(process.execPath, [ARTIFACT_SERVER_CLI, path.join(this.scratch, 'artifacts'), '--host', lab.labAddr, '--port', String(ARTIFACT_PORT)], {
      env: cleanEnv(),
      logFile: path.join(this.scratch, 'artifact-server.log'),
    });
    this.releases = createReleaseSigner(path.join(this.scratch, 'artifacts', 'release'));
    // Coordinator, over TLS as deployed: agents refuse ws:// to another host. The
    // certificate names lab (for the agents) and 127.0.0.1 (the forward the test reads through).
    this.tls = makeTestTls(path.join(this.scratch, 'tls'), { dns: ['lab'], ips: ['127.0.0.1', lab.labAddr] });
    this.caPem = readFileSync(this.tls.ca, 'utf8');
    const cfg = merge(
      {
        listen: { host: lab.labAddr, port: COORD_PORT },
        tls: { cert: this.tls.cert, key: this.tls.key },
        db: this.dbPath,
        operators: [{ name: 'e2e', token: this.operatorToken, role: 'operator' }],
        heartbeat: { intervalMs: 1000, timeoutMs: 4000 },
        validators: this.opts.hosts,
        defaults: { maxUnavailable: 1, stabilizationMs: 1000, soakMs: 3000, syncDistance: 8, syncTimeoutMs: 60_000, haltTimeoutMs: 90_000 },
        tickMs: 200,
        logLevel: 'info',
      },
      this.opts.coordinator,
    );
    await fs.writeFile(this.coordinatorConfigPath, JSON.stringify(cfg, null, 2));
    const fwd = await lab.forward(COORD_PORT);
    this.apiBase = `https://127.0.0.1:${fwd.port}`;
    await this.startCoordinator();

    // Register every node, bound to its chain validator (the coordinator dispatches
    // nothing to a node it cannot place on the chain); each agent gets its token.
    const tokens = new Map<string, string>();
    for (const h of lab.hosts) {
      const r = await this.api<{ token: string }>('POST', '/api/v1/nodes', { id: h.name, address: h.addr, pubkey: pubkeyFor(h.name) });
      tokens.set(h.name, r.token);
    }

    // guts-node 1.0.0 under systemd on every host, all sharing one genesis.
    const genesis = Date.now();
    const validators = lab.hosts.map((h) => ({ name: h.name, pubkey: pubkeyFor(h.name), weight: 1, addr: `${h.addr}:${NODE_API_PORT}` }));
    const start = findArtifact(this.manifest, this.opts.startVersion ?? '1.0.0');
    await Promise.all(
      lab.hosts.map(async (h) => {
        const nodeCfg = {
          name: h.name,
          api_addr: `0.0.0.0:${NODE_API_PORT}`,
          p2p_addr: '0.0.0.0:9000',
          metrics_addr: '0.0.0.0:9090',
          data_dir: DATA_DIR,
          history_file: HISTORY_FILE,
          log_level: 'info',
          log_format: 'json',
          genesis_time: genesis,
          validators,
          sim: { ...FAST_TIMINGS, ...(this.opts.timings ?? {}) },
        };
        // The checkout where the agent unit expects it (its ExecStart) and the
        // simulator's launchers import it (see installedLaunchers), before any
        // unit starts. A bind mount, not a symlink: the agent's cli.js decides
        // it is the main module by comparing import.meta.url (symlinks
        // resolved) with argv[1].
        await h.exec('mkdir', ['-p', AGENT_INSTALL_DIR], { check: true });
        await h.exec('mount', ['--bind', REPO_ROOT, AGENT_INSTALL_DIR], { check: true });
        await provisionGutsNode(h, { binary: start.path, config: `${JSON.stringify(nodeCfg, null, 2)}\n` });
      }),
    );
    lab.spawnInLab(process.execPath, ['-e', SAMPLER, this.samplesFile, '250', ...lab.hosts.map((h) => `${h.name}=${h.addr}:${NODE_API_PORT}`)], {
      env: cleanEnv(),
      logFile: path.join(this.scratch, 'sampler.log'),
    });

    // The agent, from the project's unit file, running this checkout.
    await Promise.all(
      lab.hosts.map(async (h) => {
        await h.writeFile(AGENT_CA_FILE, this.caPem, 0o644);
        await h.writeFile(AGENT_RELEASE_ROOT, readFileSync(this.releases!.root, 'utf8'), 0o644);
        await h.writeFile(AGENT_CONFIG, `${JSON.stringify(this.agentConfig(h, tokens.get(h.name)!), null, 2)}\n`, 0o600);
        await h.installUnit(AGENT_UNIT, { enable: true, start: true });
      }),
    );
    await this.waitHealthy(`${this.opts.hosts} nodes on ${start.version} with agents connected`, start.version);
    // The chain finalizes across hosts.
    await waitFor(
      async () => {
        const hs = this.names.map((n) => this.historyOf(n));
        return hs.every((h) => (h.at(-1)?.height ?? 0) >= 3) ? true : undefined;
      },
      { what: 'chain finalizing on every node', timeoutMs: 60_000, intervalMs: 250 },
    );
    this.t0 = Date.now();
  }

  agentConfig(h: Host, token: string): Doc {
    return merge(
      {
        nodeId: h.name,
        coordinator: { url: `wss://lab:${COORD_PORT}`, token, caFile: AGENT_CA_FILE, reconnectMaxMs: 2000 },
        service: { driver: 'systemd', name: 'guts-node', stopTimeoutMs: 20_000 },
        node: {
          binary: '/usr/local/bin/guts-node',
          dataDir: DATA_DIR,
          config: '/etc/guts/config.yaml',
          apiUrl: `http://127.0.0.1:${NODE_API_PORT}`,
          metricsUrl: 'http://127.0.0.1:9090/metrics',
        },
        stateDir: '/var/lib/guts-upgrade',
        backup: { retention: 2 },
        release: { repository: `http://${this.lab.labAddr}:${ARTIFACT_PORT}/release`, root: AGENT_RELEASE_ROOT },
        fetch: { retries: 3, backoffMs: 200, timeoutMs: 15_000 },
        checks: {
          readyTimeoutMs: 15_000,
          versionTimeoutMs: 15_000,
          consensusTimeoutMs: 20_000,
          peersTimeoutMs: 20_000,
          advanceTimeoutMs: 30_000,
          minPeers: 2,
          syncTimeoutMs: 30_000,
          syncDistance: 8,
          advanceWindowMs: 1500,
          stabilizeMs: 1500,
          httpTimeoutMs: 2000,
          commandTimeoutMs: 60_000,
        },
        diskMarginBytes: 0,
      },
      this.opts.agent,
    );
  }

  // ------------------------------------------------------------ coordinator

  /** (Re)starts the coordinator process in the lab netns on the same SQLite file and waits until it answers. */
  async startCoordinator(): Promise<void> {
    this.coordinatorStarts++;
    this.coordinator = this.lab.spawnInLab(process.execPath, [COORDINATOR_CLI, '--config', this.coordinatorConfigPath], {
      env: cleanEnv(),
      logFile: path.join(this.scratch, `coordinator-${this.coordinatorStarts}.log`),
    });
    const child = this.coordinator;
    await waitFor(
      async () => {
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(`coordinator exited ${child.exitCode ?? child.signalCode}: ${await this.coordinatorLog()}`);
        }
        const ready = await coordinatorApi({ url: this.apiBase, ca: this.caPem }, 'GET', '/health/ready').catch(() => null);
        return ready !== null ? true : undefined;
      },
      { what: 'coordinator ready', timeoutMs: 60_000, intervalMs: 200 },
    );
  }

  /** kill -9 of the coordinator process; resolves once it is gone. */
  async killCoordinator(): Promise<void> {
    const c = this.coordinator;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGKILL');
    await gone;
  }

  async coordinatorLog(): Promise<string> {
    const f = path.join(this.scratch, `coordinator-${this.coordinatorStarts}.log`);
    return (await fs.readFile(f, 'utf8').catch(() => '')).split('\n').slice(-30).join('\n');
  }

  /** The API over https, trusting the test CA (the product's own client: global fetch takes no CA). */
  async api<T = unknown>(method: string, p: string, body?: unknown): Promise<T> {
    try {
      return await coordinatorApi<T>({ url: this.apiBase, token: this.operatorToken, ca: this.caPem }, method, p, body);
    } catch (err) {
      if (err instanceof ClientApiError) throw new ApiError(err.status, err.body, `${method} ${p}`);
      throw err;
    }
  }

  artifact(version: string, fault: Fault = 'none'): Artifact {
    const a = findArtifact(this.manifest, version, fault);
    // What a scenario names is what its release owners signed as that version (a bad build too).
    this.releases!.sign(a.path, version);
    return { version, url: `http://${this.lab.labAddr}:${ARTIFACT_PORT}/${a.file}`, sha256: a.sha256 };
  }

  async startRollout(target: Artifact, body: { strategy?: string; nodes?: string[]; options?: Doc } = {}): Promise<RolloutDetail> {
    return this.api<RolloutDetail>('POST', '/api/v1/rollouts', { target, ...body });
  }

  async rollout(id: string): Promise<RolloutDetail> {
    return this.api<RolloutDetail>('GET', `/api/v1/rollouts/${id}`);
  }

  /** Polls a rollout until its state is one of `states`; survives the coordinator being down meanwhile. */
  async waitRollout(id: string, states: string[], timeoutMs = 180_000, t?: TapLike): Promise<RolloutDetail> {
    let last = '';
    return waitFor(
      async () => {
        const d = await this.rollout(id).catch(() => null);
        if (!d) return undefined;
        const summary = `${d.rollout.state} ${d.steps.map((s) => `${s.nodeId}:${s.state}`).join(' ')}`;
        if (summary !== last && t) t.comment(`rollout ${summary}`);
        last = summary;
        if (states.includes(d.rollout.state)) return d;
        if (['failed', 'aborted', 'rolled_back', 'completed', 'paused'].includes(d.rollout.state)) {
          throw new Error(`rollout ended ${d.rollout.state} (${d.rollout.code ?? ''} ${d.rollout.reason ?? ''}), wanted ${states.join('|')}`);
        }
        return undefined;
      },
      { what: `rollout ${id} to reach ${states.join('|')}`, timeoutMs, intervalMs: 500 },
    );
  }

  async events(rolloutId?: string): Promise<EventRow[]> {
    const out: EventRow[] = [];
    let after = 0;
    for (;;) {
      const p = rolloutId ? `/api/v1/rollouts/${rolloutId}/events?after=${after}` : `/api/v1/events?after=${after}`;
      const r = await this.api<{ events: EventRow[] }>('GET', p);
      out.push(...r.events);
      if (r.events.length === 0) break;
      after = r.events[r.events.length - 1]!.seq;
      if (r.events.length < 1000 && rolloutId) break;
    }
    return out;
  }

  async nodes(): Promise<NodeRow[]> {
    return (await this.api<{ nodes: NodeRow[] }>('GET', '/api/v1/nodes')).nodes;
  }

  /** Waits until the coordinator sees every node connected, healthy (and on `version`). */
  async waitHealthy(what: string, version?: string, timeoutMs = 90_000): Promise<NodeRow[]> {
    let last: NodeRow[] = [];
    try {
      return await waitFor(
        async () => {
          last = await this.nodes();
          const ok = last.length === this.opts.hosts && last.every((n) => n.connected && n.healthy && (!version || n.version === version));
          return ok ? last : undefined;
        },
        { what: what, timeoutMs, intervalMs: 300 },
      );
    } catch (err) {
      const diag = await Promise.all(this.hosts.map(async (h) => `--- ${h.name}\n${(await h.journal(AGENT_UNIT, 15)).slice(-3000)}`));
      throw new Error(`${(err as Error).message}\nnodes: ${JSON.stringify(last)}\n${diag.join('\n')}`);
    }
  }

  // ------------------------------------------------------------ observations

  historyOf(name: string): HistoryEntry[] {
    return readHistory(this.host(name).rootPath(HISTORY_FILE));
  }

  /** Every node's height history merged (sorted by time). */
  history(): HistoryEntry[] {
    return readHistory(this.hosts.map((h) => h.rootPath(HISTORY_FILE)));
  }

  samples(): Sample[] {
    let text = '';
    try {
      text = readFileSync(this.samplesFile, 'utf8');
    } catch {
      return [];
    }
    const out: Sample[] = [];
    for (const l of text.split('\n')) {
      if (!l) continue;
      try {
        out.push(JSON.parse(l) as Sample);
      } catch {
        /* torn last line */
      }
    }
    return out;
  }

  /** `guts-node --version` of the installed binary and the version the running node reports. */
  async versions(h: Host): Promise<{ binary: string; running: string | null; active: string; agent: string }> {
    const b = await h.exec('/usr/local/bin/guts-node', ['--version']);
    const c = await h.exec('curl', ['-sS', '--max-time', '3', `http://127.0.0.1:${NODE_API_PORT}/health`]);
    let running: string | null = null;
    try {
      running = (JSON.parse(c.stdout) as { version?: string }).version ?? null;
    } catch {
      /* down */
    }
    const active = (await h.systemctl('is-active', NODE_UNIT)).stdout.trim();
    const agent = (await h.systemctl('is-active', AGENT_UNIT)).stdout.trim();
    return { binary: b.stdout.trim().replace(/^guts-node\s+/, ''), running, active, agent };
  }

  /** The agent's own view (`guts-upgrade-agent status --json` inside the host). */
  async agentStatus(h: Host): Promise<{
    status: Record<string, unknown>;
    lock: unknown;
    recentResults: {
      commandId: string;
      kind: string;
      outcome: string;
      code?: string;
      fromVersion: string | null;
      toVersion: string | null;
      runningVersion: string | null;
    }[];
  }> {
    const r = await h.exec('/usr/bin/node', [AGENT_CLI, 'status', '--json', '--config', AGENT_CONFIG], { timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`[${h.name}] agent status exited ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout) as never;
  }

  /** Rows of the agent's journal (commands and their final states), read with sqlite through the agent's own module. */
  async agentCommands(h: Host): Promise<{ id: string; kind: string; state: string; path: string }[]> {
    const script =
      `const D=require(${JSON.stringify(path.join(REPO_ROOT, 'node_modules/better-sqlite3'))});` +
      `const db=new D(process.argv[1],{readonly:true});` +
      `console.log(JSON.stringify(db.prepare("SELECT c.id, c.kind, c.state, (SELECT group_concat(to_state, ',') FROM (SELECT to_state FROM transitions t WHERE t.command_id = c.id ORDER BY seq)) AS path FROM commands c ORDER BY c.created_at").all()))`;
    const dbFile = await this.agentJournalFile(h);
    const r = await h.exec('/usr/bin/node', ['-e', script, dbFile], { timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`[${h.name}] reading agent journal failed: ${r.stderr}`);
    return JSON.parse(r.stdout) as never;
  }

  private async agentJournalFile(h: Host): Promise<string> {
    const dir = '/var/lib/guts-upgrade';
    const files = await fs.readdir(h.rootPath(dir));
    const db = files.find((f) => /\.(db|sqlite3?)$/.test(f));
    if (!db) throw new Error(`[${h.name}] no journal database in ${dir}: ${files.join(', ')}`);
    return path.join(dir, db);
  }

  async leftovers(): Promise<{ clean: boolean; left: Leftovers }> {
    const left = await leftovers(this.lab.id);
    return { clean: isClean(left), left };
  }

  /** Tears the lab down now (also registered on t.teardown; idempotent). */
  async teardown(): Promise<void> {
    await this.lab.teardown();
  }
}

export { sleep };
