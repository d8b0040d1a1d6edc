/** Integration rig: the coordinator (in-process or as a child process), simulator nodes and real agent processes. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { pino } from 'pino';
import { api, buildConfig, startCoordinator, type RunningCoordinator } from '@guts-upgrade/coordinator';
import type { EventsBody, FleetBody, NodeRegisteredBody, RolloutDetailBody } from '@guts-upgrade/coordinator';
import { freePorts, waitFor, type SimTimings } from '@guts-upgrade/simulator';
import { removeDir, startSimFleet, type SimFleet, type SimFleetOptions } from '@guts-upgrade/testkit';

export const TOKEN = 'integration-operator-token';
/** A viewer's token: it may read everything and change nothing. */
export const VIEWER_TOKEN = 'integration-viewer-token';

/** The coordinator daemon, found through the bin its package declares. */
function serverCli(): string {
  const manifest = createRequire(import.meta.url).resolve('@guts-upgrade/coordinator/package.json');
  const pkg = JSON.parse(readFileSync(manifest, 'utf8')) as { bin: Record<string, string> };
  return join(dirname(manifest), pkg.bin['guts-upgrade-coordinator']!);
}
const SERVER_CLI = serverCli();

interface Tap {
  teardown(fn: () => unknown): void;
}

export interface Rig {
  dir: string;
  url: string;
  op: { url: string; token: string };
  fleet: SimFleet;
  coordinator: RunningCoordinator | null;
  /** kill -9 the coordinator child process and start it again on the same DB (child mode only). */
  crashAndRestart(): Promise<void>;
  waitFleetReady(version?: string): Promise<void>;
  waitRollout(id: string, states?: string[]): Promise<RolloutDetailBody>;
}

const CONFIG = (port: number, db: string, windows: unknown[], webhooks: unknown[], canaryLimits: Record<string, number>) => ({
  listen: { host: '127.0.0.1', port },
  db,
  operators: [
    { name: 'it', token: TOKEN, role: 'operator' },
    { name: 'watcher', token: VIEWER_TOKEN, role: 'viewer' },
  ],
  heartbeat: { intervalMs: 500, timeoutMs: 5000 },
  defaults: { stabilizationMs: 500, soakMs: 2000, syncDistance: 5, syncTimeoutMs: 30_000, haltTimeoutMs: 60_000, canaryLimits },
  windows,
  webhooks,
  webhookRetry: { maxAttempts: 3, baseDelayMs: 200, timeoutMs: 2000 },
  tickMs: 100,
  logLevel: 'warn',
});

export async function makeRig(
  t: Tap,
  opts: {
    n: number;
    child?: boolean;
    windows?: unknown[];
    /** Webhooks as the coordinator's configuration takes them ({ url, secret, events? }). */
    webhooks?: unknown[];
    /** The coordinator's default canary limits, over its own. */
    canaryLimits?: Record<string, number>;
    timings?: Partial<SimTimings>;
    chain?: Partial<Pick<SimFleetOptions, 'weights' | 'unmanaged' | 'liar'>>;
    /** Follower nodes f0.., registered with role follower, each with its agent. */
    followers?: number;
  },
): Promise<Rig> {
  const dir = mkdtempSync(join(tmpdir(), 'guts-it-'));
  const port = (await freePorts(1))[0]!;
  const cfg = CONFIG(port, join(dir, 'coordinator.db'), opts.windows ?? [], opts.webhooks ?? [], opts.canaryLimits ?? {});
  let coordinator: RunningCoordinator | null = null;
  let proc: ChildProcess | null = null;
  let fleet: SimFleet | null = null;
  const url = `http://127.0.0.1:${port}`;
  const op = { url, token: TOKEN };
  const startChild = async () => {
    const env = { ...process.env };
    delete env.NODE_OPTIONS;
    proc = spawn(process.execPath, [SERVER_CLI, '--config', join(dir, 'coordinator.json')], { env, stdio: ['ignore', 'ignore', 'inherit'] });
    fleet?.track(proc.pid!);
    await waitFor(
      () =>
        api({ url }, 'GET', '/health/ready').then(
          () => true,
          () => false,
        ),
      { what: 'coordinator up', timeoutMs: 20_000, intervalMs: 200 },
    );
  };
  if (opts.child) {
    writeFileSync(join(dir, 'coordinator.json'), JSON.stringify(cfg)); // JSON is YAML
    await startChild();
  } else {
    coordinator = await startCoordinator(buildConfig(cfg), { log: pino({ level: 'warn' }) });
  }
  t.teardown(async () => {
    await fleet?.close();
    await coordinator?.close();
    (proc as ChildProcess | null)?.kill('SIGKILL');
    // KEEP=1 leaves the temp dir (agent logs, journals, coordinator DB) for a post-mortem.
    if (process.env.KEEP) process.stderr.write(`# KEEP: integration rig left in ${dir}\n`);
    else removeDir(dir);
  });
  const tokens: Record<string, string> = {};
  for (let i = 0; i < opts.n; i++) tokens[`v${i}`] = (await api<NodeRegisteredBody>(op, 'POST', '/api/v1/nodes', { id: `v${i}` })).token;
  for (let i = 0; i < (opts.followers ?? 0); i++)
    tokens[`f${i}`] = (await api<NodeRegisteredBody>(op, 'POST', '/api/v1/nodes', { id: `f${i}`, role: 'follower' })).token;
  fleet = await startSimFleet({
    n: opts.n,
    dir: join(dir, 'fleet'),
    coordinatorWsUrl: url.replace('http', 'ws'),
    tokens,
    timings: opts.timings,
    ...(opts.chain ?? {}),
    ...(opts.followers ? { followers: opts.followers } : {}),
  });
  // Killed by a timeout, this process would otherwise leave the coordinator child behind with the fleet.
  if (proc) fleet.track((proc as ChildProcess).pid!);
  const rig: Rig = {
    dir,
    url,
    op,
    fleet,
    coordinator,
    async crashAndRestart() {
      const p = proc!;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGKILL');
      await exited;
      await startChild();
    },
    async waitFleetReady(version = '1.0.0') {
      await waitFor(
        async () => {
          const f = await api<FleetBody>(op, 'GET', '/api/v1/fleet');
          return f.down.length === 0 && f.nodes.length === opts.n + (opts.followers ?? 0) && f.nodes.every((n) => n.version === version) && f.leader;
        },
        { what: 'fleet ready', timeoutMs: 120_000, intervalMs: 200 },
      );
    },
    async waitRollout(id, states = ['completed', 'failed', 'aborted', 'rolled_back', 'paused']) {
      return waitFor(
        async () => {
          const d = await api<RolloutDetailBody>(op, 'GET', `/api/v1/rollouts/${id}`);
          return states.includes(d.rollout.state) ? d : null;
        },
        { what: `rollout ${id} in ${states.join('/')}`, timeoutMs: 180_000, intervalMs: 200 },
      );
    },
  };
  return rig;
}

/**
 * Liveness from the nodes' own finalization histories: for every upgrade, from
 * its dispatch until the coordinator saw the node upgraded (or failed), the
 * other nodes kept finalizing new heights. A window without one means the
 * chain stalled while that node was down.
 */
export async function livenessDuringUpgrades(rig: Rig, id: string): Promise<{ windows: number; stalled: string[]; leaders: number }> {
  const events = (await api<EventsBody>(rig.op, 'GET', `/api/v1/rollouts/${id}/events`)).events;
  const history = rig.fleet.history();
  const stalled: string[] = [];
  let windows = 0;
  for (const d of events.filter((e) => e.type === 'node.dispatched' && e.data.command === 'upgrade')) {
    const from = Date.parse(d.at);
    const end = events.find((e) => e.nodeId === d.nodeId && Date.parse(e.at) >= from && ['node.upgraded', 'node.failed'].includes(e.type));
    if (!end) continue;
    windows++;
    const to = Date.parse(end.at);
    const before = Math.max(-1, ...history.filter((h) => h.t <= from).map((h) => h.height));
    const advanced = history.some((h) => h.t > from && h.t <= to && h.node !== d.nodeId && h.height > before);
    if (!advanced) stalled.push(`${d.nodeId} ${d.at}..${end.at}`);
  }
  const t0 = Date.parse(events[0]?.at ?? new Date().toISOString());
  const leaders = new Set(history.filter((h) => h.t >= t0).map((h) => h.leader)).size;
  return { windows, stalled, leaders };
}

/** Checks from the audit log: never more than f nodes in flight, and the leader at dispatch was never the node (unless last). */
export async function auditRollout(rig: Rig, id: string, n: number): Promise<{ maxInFlight: number; leaderViolations: string[]; order: string[] }> {
  const events = (await api<EventsBody>(rig.op, 'GET', `/api/v1/rollouts/${id}/events`)).events;
  const inFlight = new Set<string>();
  let maxInFlight = 0;
  const leaderViolations: string[] = [];
  const order: string[] = [];
  const upgrades = events.filter((e) => e.type === 'node.dispatched' && e.data.command === 'upgrade');
  for (const e of events) {
    if (e.nodeId === null) continue; // a rollout-wide event
    if (e.type === 'node.dispatched' && e.data.command !== 'prepare') {
      inFlight.add(e.nodeId);
      maxInFlight = Math.max(maxInFlight, inFlight.size);
      if (e.data.command === 'upgrade') {
        order.push(e.nodeId);
        if (e.data.leader === e.nodeId && order.length < upgrades.length) leaderViolations.push(e.nodeId);
      }
    }
    if (e.type === 'node.upgraded' || e.type === 'node.failed' || e.type === 'node.rolled_back') inFlight.delete(e.nodeId);
  }
  void n;
  return { maxInFlight, leaderViolations, order };
}
