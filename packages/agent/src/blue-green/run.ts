/**
 * A blue-green upgrade of a follower on a docker host. The live container
 * ("blue") keeps serving while the new version ("green") starts beside it,
 * in a second container on the other slot's ports with its own copy of the
 * data; once green is ready, caught up and smoke-tested, the proxy is pointed
 * at it and reloaded gracefully, and blue is stopped, then removed, and green
 * takes blue's name. Never for a validator (E_BLUE_GREEN_VALIDATOR).
 *
 * The command's states stay those of state.ts; each one here means:
 *
 * | state   | phase (ctx.data.bg.phase)   | after a crash (RECOVERY)                                        |
 * |---------|-----------------------------|-----------------------------------------------------------------|
 * | backup  | copy                        | fail-untouched: blue never touched; the next copy replaces the partial one |
 * | install | create                      | roll-back: remove green (and its copy); blue still serves      |
 * | start   | start                       | roll-back: the same                                            |
 * | verify  | verify                      | roll-back: the same                                            |
 * | verify  | switch (journaled first)    | roll-back: proxy back to blue (rewrite + reload), remove green |
 * | verify  | stop-blue                   | roll-back: start blue, wait ready, proxy back, remove green    |
 * | commit  | finalize                    | record-success: remove blue, rename green (finalize, idempotent) |
 *
 * Rollback before the switch removes green; after it, blue is started first
 * and only then gets the traffic back, so no request meets a stopped node.
 */
import fs from 'node:fs';
import path from 'node:path';
import type Docker from 'dockerode';
import { CodedError } from '@guts-upgrade/protocol';
import { fillArgv } from '../config.js';
import { NodeClient } from '../node-client.js';
import { engine, isNotFound, specFromInspect } from '../service/engine.js';
import { addCheck, type StepContext } from '../steps/context.js';
import { runArgv, sleep, tailLines } from '../util.js';
import { pollUntil } from '../steps/wait.js';
import type { BlueGreenConfig, Slot } from './config.js';
import { slotDataDir } from './config.js';
import { currentUpstream, pointProxyAt } from './proxy.js';

export type Phase = 'copy' | 'create' | 'start' | 'verify' | 'switch' | 'stop-blue' | 'finalize';

/** What the journal keeps of a blue-green upgrade (ctx.data.bg). */
export interface BlueGreenData {
  phase: Phase;
  /** The slot green runs in (0 or 1) and blue's api address, where rollback sends traffic back. */
  slot: number;
  blueApi: string;
  blueData: string;
  green: string;
  /** When the proxy was pointed at green, and how long the reload took to show (ms). */
  switchedAt?: number;
  switchMs?: number;
}

/** Env names the node reads for its addresses and data dir (the simulator reads the same). */
const ENV = { api: 'GUTS_API_ADDR', p2p: 'GUTS_P2P_ADDR', metrics: 'GUTS_METRICS_ADDR', dataDir: 'GUTS_DATA_DIR' } as const;

function bgOf(ctx: StepContext): BlueGreenConfig {
  if (!ctx.config.blueGreen) throw new CodedError('E_INTERNAL', 'no blueGreen section');
  return ctx.config.blueGreen;
}

const envValue = (env: string[] | undefined, name: string) =>
  env
    ?.find((e) => e.startsWith(`${name}=`))
    ?.split('=')
    .slice(1)
    .join('=') ?? null;

/** Which slot blue listens in: the one its GUTS_API_ADDR names; the operator's first container runs in slot 0. */
export function blueSlot(bg: BlueGreenConfig, blueEnv: string[] | undefined): number {
  const api = envValue(blueEnv, ENV.api);
  return api !== null && api === bg.slots[1].api ? 1 : 0;
}

/**
 * Green's binds: blue's, less its data dir (and whatever is under it), plus
 * green's slot dir. A bind holding the data dir inside a wider one would give
 * green the live data: refused (E_BLUE_GREEN_MOUNT), as is a data dir that is
 * no bind at all (it could only be in the container's own layer).
 */
export function greenBinds(blueBinds: string[], blueData: string, slotDir: string): string[] {
  const under = (p: string, dir: string) => p === dir || p.startsWith(`${dir}/`);
  let found = false;
  const out: string[] = [];
  for (const b of blueBinds) {
    const src = b.split(':')[0]!;
    if (under(src, blueData)) {
      found = true;
      continue;
    }
    if (under(blueData, src)) {
      throw new CodedError(
        'E_BLUE_GREEN_MOUNT',
        `the bind ${b} holds the live data dir ${blueData}: mount the data dir on its own, apart from config and other files`,
      );
    }
    out.push(b);
  }
  if (!found) throw new CodedError('E_BLUE_GREEN_MOUNT', `the live container has no bind mount of its data dir ${blueData}`);
  return [...out, `${slotDir}:${slotDir}`];
}

/** Green's create options: blue's configuration on the new image, on the other slot, with its own data. */
export function greenSpec(
  bg: BlueGreenConfig,
  spec: Docker.ContainerCreateOptions,
  o: { name: string; image: string; slot: Slot; slotDir: string; dataDir: string; blueData: string; slotIndex: number },
): Docker.ContainerCreateOptions {
  const ours = new Set([...Object.values(ENV), ...Object.keys(bg.env)]);
  const fill = (v: string) => fillArgv([v], { dataDir: o.dataDir, slotDir: o.slotDir, slot: String(o.slotIndex) })[0]!;
  const env = [
    ...(spec.Env ?? []).filter((e) => !ours.has(e.split('=')[0]!)),
    `${ENV.api}=${o.slot.api}`,
    ...(o.slot.p2p ? [`${ENV.p2p}=${o.slot.p2p}`] : []),
    ...(o.slot.metrics ? [`${ENV.metrics}=${o.slot.metrics}`] : []),
    `${ENV.dataDir}=${o.dataDir}`,
    ...Object.entries(bg.env).map(([k, v]) => `${k}=${fill(v)}`),
  ];
  const host = spec.HostConfig ?? {};
  if (
    (host.Mounts ?? []).some((m) => m.Source && (m.Source === o.blueData || o.blueData.startsWith(`${m.Source}/`) || m.Source.startsWith(`${o.blueData}/`)))
  ) {
    throw new CodedError('E_BLUE_GREEN_MOUNT', `the live container mounts its data dir ${o.blueData} as a volume: use a bind mount of the data dir alone`);
  }
  return {
    ...spec,
    name: o.name,
    Image: o.image,
    Env: env,
    HostConfig: { ...host, Binds: greenBinds(host.Binds ?? [], o.blueData, o.slotDir) },
  };
}

function clientFor(ctx: StepContext, api: string): NodeClient {
  return new NodeClient(`http://${api}`, null, ctx.config.checks.httpTimeoutMs);
}

async function inspect(docker: Docker, name: string): Promise<Docker.ContainerInspectInfo | null> {
  try {
    return await docker.getContainer(name).inspect();
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

async function removeContainer(docker: Docker, name: string): Promise<void> {
  try {
    await docker.getContainer(name).remove({ force: true });
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

function phase(ctx: StepContext, p: Phase, extra: Partial<BlueGreenData> = {}): void {
  ctx.save({ bg: { ...(ctx.data.bg as BlueGreenData), ...extra, phase: p } });
}

/** backup: blue's data copied into green's slot while blue runs (a crash-consistent copy, as after a power loss). */
async function copyData(ctx: StepContext, docker: Docker): Promise<void> {
  const bg = bgOf(ctx);
  const name = ctx.config.service.container;
  const blue = await inspect(docker, name);
  if (!blue?.State.Running) throw new CodedError('E_SERVICE_MISSING', `container ${name} is not running: blue-green needs the live node serving`);
  const slot = 1 - blueSlot(bg, blue.Config.Env);
  const blueData = envValue(blue.Config.Env, ENV.dataDir) ?? ctx.config.node.dataDir;
  const slotDir = slotDataDir(bg, slot);
  ctx.save({ bg: { phase: 'copy', slot, blueApi: bg.slots[1 - slot]!.api, blueData, green: `${name}-next` } satisfies BlueGreenData });
  // The blue api as the proxy knows it now: a first run may find no agent file yet.
  const front = currentUpstream(bg.proxy.config);
  if (front !== null && front !== bg.slots[1 - slot]!.api) {
    throw new CodedError(
      'E_PROXY_RELOAD',
      `${bg.proxy.config} sends traffic to ${front}, but the live container ${name} runs in slot ${1 - slot} (${bg.slots[1 - slot]!.api})`,
    );
  }
  fs.rmSync(slotDir, { recursive: true, force: true });
  fs.mkdirSync(slotDir, { recursive: true });
  ctx.progress('backup', 'running', `copying ${blueData} into ${slotDir}/data while ${name} serves`);
  fs.cpSync(blueData, `${slotDir}/data`, { recursive: true, preserveTimestamps: true });
  const st = fs.statSync(blueData);
  fs.chownSync(slotDir, st.uid, st.gid);
  addCheck(ctx, 'blue-green-copy', true, `${blueData} -> ${slotDir}/data (green's own copy; the live volume is never shared)`);
}

/** install: green created (not started) on the new image, named <container>-next. */
async function createGreen(ctx: StepContext, docker: Docker): Promise<void> {
  const bg = bgOf(ctx);
  const d = ctx.data.bg as BlueGreenData;
  phase(ctx, 'create');
  await ctx.afterJournal('green-create');
  const blue = await inspect(docker, ctx.config.service.container);
  if (!blue) throw new CodedError('E_SERVICE_MISSING', `container ${ctx.config.service.container} is gone`);
  await removeContainer(docker, d.green);
  const image = await docker
    .getImage(blue.Image)
    .inspect()
    .catch(() => null);
  const slotDir = slotDataDir(bg, d.slot);
  const spec = greenSpec(bg, specFromInspect(blue, image), {
    name: d.green,
    image: ctx.data.newImage!,
    slot: bg.slots[d.slot]!,
    slotDir,
    dataDir: `${slotDir}/data`,
    // Blue on a slot of an earlier switch: its whole slot dir (data, history) is the agent's mount, none of green's.
    blueData: d.blueData.startsWith(`${bg.dataCopyDir}/`) ? path.dirname(d.blueData) : d.blueData,
    slotIndex: d.slot,
  });
  await docker.createContainer(spec);
  ctx.progress('install', 'running', `container ${d.green} created on ${ctx.data.newImage} in slot ${d.slot} (${bg.slots[d.slot]!.api})`);
}

/** start: green started and ready on its own address. */
async function startGreen(ctx: StepContext, docker: Docker): Promise<void> {
  const d = ctx.data.bg as BlueGreenData;
  phase(ctx, 'start');
  await docker.getContainer(d.green).start();
  const green = clientFor(ctx, ctx.config.blueGreen!.slots[d.slot]!.api);
  const r = await pollUntil({
    read: async () => ((await green.ready()) ? 'ready' : (await inspect(docker, d.green))?.State.Running ? 'starting' : 'exited'),
    done: (v) => v === 'ready',
    giveUp: (v) => v === 'exited',
    timeoutMs: ctx.config.checks.readyTimeoutMs,
    maxMs: ctx.config.checks.pollMaxMs,
  });
  addCheck(ctx, 'green-ready', r.ok, `${d.green}: ${r.value} after ${r.waitedMs} ms`, { waitedMs: r.waitedMs, last: r.value });
  if (!r.ok) {
    const tail = tailLines((await logsOf(docker, d.green)).join('\n'), 5).join('\n');
    throw new CodedError(r.value === 'exited' ? 'E_START' : 'E_HEALTH_TIMEOUT', `the new container ${d.green} is ${r.value} after ${r.waitedMs} ms: ${tail}`);
  }
}

async function logsOf(docker: Docker, name: string): Promise<string[]> {
  const { containerLogTail } = await import('../service/engine.js');
  return containerLogTail(docker, name, 20);
}

/** verify: green reports the new version, has caught up with blue, and passes the smoke command. */
async function verifyGreen(ctx: StepContext): Promise<void> {
  const bg = bgOf(ctx);
  const d = ctx.data.bg as BlueGreenData;
  phase(ctx, 'verify');
  const green = clientFor(ctx, bg.slots[d.slot]!.api);
  const want = ctx.data.toVersion!;
  const c = ctx.config.checks;
  const v = await pollUntil({ read: () => green.runningVersion(), done: (x) => x === want, timeoutMs: c.versionTimeoutMs, maxMs: c.pollMaxMs });
  addCheck(ctx, 'green-version', v.ok, `the new container reports ${v.value ?? 'nothing'}, expected ${want}`, { waitedMs: v.waitedMs, last: v.value ?? '' });
  if (!v.ok) throw new CodedError('E_VERSION_MISMATCH', `the new container reports ${v.value ?? '(none)'}, expected ${want}`);
  // Caught up: green's finalized height within syncDistance of blue's (read now, blue keeps serving).
  const blue = clientFor(ctx, d.blueApi);
  const height = async (n: NodeClient) => (await n.consensus())?.finalized_height ?? -1;
  const s = await pollUntil({
    read: async () => ({ g: await height(green), b: await height(blue) }),
    done: (x) => x.g >= 0 && x.g >= x.b - c.syncDistance,
    timeoutMs: c.syncTimeoutMs,
    maxMs: c.pollMaxMs,
    onPoll: (x) => ctx.progress('verify', 'running', `green catching up: height ${x.g} of ${x.b}`),
  });
  addCheck(ctx, 'green-caught-up', s.ok, `green height ${s.value.g}, blue ${s.value.b} (distance ${c.syncDistance})`, {
    waitedMs: s.waitedMs,
    last: String(s.value.g),
  });
  if (!s.ok) throw new CodedError('E_SYNC_TIMEOUT', `the new container is at height ${s.value.g}, the live one at ${s.value.b}, after ${s.waitedMs} ms`);
  if (ctx.config.commands.smoke) {
    const argv = fillArgv(ctx.config.commands.smoke, { apiUrl: `http://${bg.slots[d.slot]!.api}`, version: want, binary: ctx.config.service.imageBinary });
    const r = await runArgv(argv, { timeoutMs: c.commandTimeoutMs });
    const out = tailLines(`${r.stdout}\n${r.stderr}`, 10).join('\n');
    addCheck(ctx, 'smoke', r.code === 0, `exit ${r.code ?? r.signal}: ${out}`);
    if (r.code !== 0) throw new CodedError('E_SMOKE', `smoke command exited ${r.code ?? r.signal} against the new container: ${out.slice(-1000)}`);
  }
}

/** Polls the front (node.apiUrl, the proxy) until it answers with `version` several times in a row. */
async function frontServes(ctx: StepContext, version: string): Promise<{ ok: boolean; waitedMs: number; last: string }> {
  let streak = 0;
  const r = await pollUntil({
    read: async () => {
      const v = await ctx.node.runningVersion();
      streak = v === version ? streak + 1 : 0;
      return v ?? 'nothing';
    },
    done: () => streak >= 5,
    timeoutMs: 30_000,
    initialMs: 20,
    maxMs: 50,
  });
  return { ok: r.ok, waitedMs: r.waitedMs, last: r.value };
}

/** verify, continued: traffic moves to green (proxy rewritten, reloaded), then blue stops once the proxy's old workers drained. */
async function switchTraffic(ctx: StepContext, docker: Docker): Promise<void> {
  const bg = bgOf(ctx);
  const d = ctx.data.bg as BlueGreenData;
  // Journaled before the file changes: a crash from here rolls the proxy back.
  phase(ctx, 'switch', { switchedAt: Date.now() });
  await ctx.afterJournal('switch');
  const t0 = Date.now();
  await pointProxyAt(bg, bg.slots[d.slot]!.api);
  const f = await frontServes(ctx, ctx.data.toVersion!);
  const switchMs = Date.now() - t0;
  addCheck(ctx, 'switch', f.ok, `${bg.proxy.kind} -> ${bg.slots[d.slot]!.api}: the front served ${f.last} after ${switchMs} ms`, {
    waitedMs: switchMs,
    last: f.last,
  });
  if (!f.ok) throw new CodedError('E_PROXY_RELOAD', `the proxy still serves ${f.last} ${switchMs} ms after its reload, expected ${ctx.data.toVersion}`);
  phase(ctx, 'stop-blue', { switchMs });
  await ctx.afterJournal('stop-blue');
  // Requests the proxy's old workers took before the reload still go to blue: let them finish.
  await sleep(bg.drainMs);
  const t = Math.ceil(ctx.config.service.stopTimeoutMs / 1000);
  await docker
    .getContainer(ctx.config.service.container)
    .stop({ t })
    .catch((err: { statusCode?: number }) => {
      if (err.statusCode !== 304) throw err;
    });
  ctx.progress('verify', 'running', `traffic on ${d.green}; ${ctx.config.service.container} stopped`);
}

/** commit: blue removed, green takes its name. Idempotent: recovery runs it again. */
export async function finalize(ctx: StepContext): Promise<void> {
  const docker = engine(ctx.config);
  const d = ctx.data.bg as BlueGreenData;
  phase(ctx, 'finalize');
  const name = ctx.config.service.container;
  const green = await inspect(docker, d.green);
  if (!green) return; // renamed already
  await removeContainer(docker, name);
  await docker.getContainer(d.green).rename({ name });
  // Blue's data was a slot copy of an earlier blue-green upgrade: nothing runs on it any more. The operator's own data dir stays.
  const bg = bgOf(ctx);
  if (d.blueData.startsWith(`${bg.dataCopyDir}/`)) fs.rmSync(path.dirname(d.blueData), { recursive: true, force: true });
}

/** The journaled steps of a blue-green upgrade, from backup on (preflight and fetch are the pipeline's). */
export async function blueGreenSteps(
  ctx: StepContext,
  step: (name: 'backup' | 'install' | 'start' | 'verify', fn: () => Promise<void>) => Promise<void>,
  touched: () => void,
): Promise<void> {
  const docker = engine(ctx.config);
  await step('backup', () => copyData(ctx, docker));
  touched();
  await step('install', () => createGreen(ctx, docker));
  await step('start', () => startGreen(ctx, docker));
  await step('verify', async () => {
    await verifyGreen(ctx);
    await switchTraffic(ctx, docker);
  });
}

/**
 * Rollback by phase: before the switch, green is removed and blue (never
 * touched) keeps serving; from the switch on, blue is started and ready
 * before the proxy points back at it, then green is removed.
 */
export async function blueGreenRollback(ctx: StepContext): Promise<{ mode: 'binary'; ok: boolean; error?: string }> {
  const bg = bgOf(ctx);
  const d = ctx.data.bg as BlueGreenData | undefined;
  const docker = engine(ctx.config);
  try {
    if (!d) return { mode: 'binary', ok: true };
    const switched = d.phase === 'switch' || d.phase === 'stop-blue';
    if (switched) {
      ctx.progress('rollback', 'running', `starting ${ctx.config.service.container} and pointing the proxy back at ${d.blueApi}`);
      const blue = await inspect(docker, ctx.config.service.container);
      if (!blue) throw new CodedError('E_ROLLBACK_FAILED', `container ${ctx.config.service.container} is gone`);
      if (!blue.State.Running) await docker.getContainer(ctx.config.service.container).start();
      const client = clientFor(ctx, d.blueApi);
      const r = await pollUntil({
        read: () => client.ready(),
        done: (x) => x,
        timeoutMs: ctx.config.checks.readyTimeoutMs,
        maxMs: ctx.config.checks.pollMaxMs,
      });
      if (!r.ok) throw new CodedError('E_ROLLBACK_FAILED', `${ctx.config.service.container} not ready after ${r.waitedMs} ms`);
      await pointProxyAt(bg, d.blueApi);
      if (ctx.data.fromVersion) {
        const f = await frontServes(ctx, ctx.data.fromVersion);
        addCheck(ctx, 'rollback-switch', f.ok, `the front serves ${f.last} after ${f.waitedMs} ms`);
        if (!f.ok) throw new CodedError('E_ROLLBACK_FAILED', `the proxy serves ${f.last} after pointing back, expected ${ctx.data.fromVersion}`);
      }
      await sleep(bg.drainMs);
    }
    await removeContainer(docker, d.green);
    fs.rmSync(slotDataDir(bg, d.slot), { recursive: true, force: true });
    addCheck(ctx, 'rollback', true, `${d.green} removed${switched ? `; traffic back on ${ctx.config.service.container}` : ' before any switch'}`);
    return { mode: 'binary', ok: true };
  } catch (err) {
    addCheck(ctx, 'rollback', false, (err as Error).message);
    return { mode: 'binary', ok: false, error: (err as Error).message };
  }
}
