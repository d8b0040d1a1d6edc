/**
 * Shared bench plumbing: a registry of everything the bench starts (child
 * processes, temp dirs) so it is all stopped and removed at the end, even on
 * error or Ctrl-C; /proc sampling of RSS and CPU; the real coordinator process.
 */
import { spawn, fork } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const COORDINATOR_CLI = path.join(ROOT, 'packages/coordinator/dist/src/server-cli.js');
export const AGENT_CLI = path.join(ROOT, 'packages/agent/dist/src/cli.js');
export const SIM_CLI = path.join(ROOT, 'packages/simulator/dist/src/cli.js');
export const LOADGEN = path.join(ROOT, 'bench/lib/loadgen.js');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- cleanup registry

const children = new Set();
const detachedPids = new Set();
const dirs = new Set();

/** Env for children: no test-runner hooks, no GUTS_UPGRADE_* from the caller. */
export function childEnv(extra = {}) {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  for (const k of Object.keys(env)) if (k.startsWith('GUTS_UPGRADE_') || k.startsWith('TAP')) delete env[k];
  return { ...env, ...extra };
}

export function track(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

export function trackPid(pid) {
  if (pid) detachedPids.add(pid);
}

export function untrackPid(pid) {
  detachedPids.delete(pid);
}

export function tmpDir(label) {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `guts-bench-${label}-`));
  dirs.add(d);
  return d;
}

export function removeDir(d) {
  fs.rmSync(d, { recursive: true, force: true });
  dirs.delete(d);
}

export function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function stopChild(child, timeoutMs = 5000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  await exited;
  clearTimeout(t);
}

export async function stopPid(pid, timeoutMs = 5000) {
  if (!alive(pid)) return untrackPid(pid);
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    /* gone */
  }
  const end = Date.now() + timeoutMs;
  while (alive(pid) && Date.now() < end) await sleep(50);
  if (alive(pid))
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  untrackPid(pid);
}

/** Stops everything the bench started and removes its temp dirs. */
export async function cleanupAll() {
  await Promise.all([...children].map((c) => stopChild(c, 3000)));
  await Promise.all([...detachedPids].map((p) => stopPid(p, 3000)));
  for (const d of [...dirs]) removeDir(d);
}

let hooked = false;
export function installCleanupHooks() {
  if (hooked) return;
  hooked = true;
  const onSignal = (sig) => {
    process.stderr.write(`\n${sig}: stopping everything the bench started\n`);
    void cleanupAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // Last resort on a synchronous exit: kill what is left (no waiting possible here).
  process.once('exit', () => {
    for (const c of children)
      try {
        c.kill('SIGKILL');
      } catch {
        /* gone */
      }
    for (const p of detachedPids)
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    for (const d of dirs)
      try {
        fs.rmSync(d, { recursive: true, force: true });
      } catch {
        /* best effort */
      }
  });
}

// ---------------------------------------------------------------- /proc

const CLK_TCK = 100;
const PAGE = 4096;

/** utime+stime (seconds) and RSS (bytes) of a pid, or null when it is gone. */
export function procSample(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cpu = (Number(f[11]) + Number(f[12])) / CLK_TCK;
    const rss = Number(f[21]) * PAGE;
    return { t: Date.now(), cpu, rss };
  } catch {
    return null;
  }
}

/** CPU seconds (user + system) of this process's waited-for children so far: what a finished `tar` or `sync` cost. */
export function childrenCpuSec() {
  const stat = fs.readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[13]) + Number(f[14])) / CLK_TCK;
}

/**
 * VmHWM (peak RSS), VmRSS and its two parts in bytes from /proc/<pid>/status: anonymous memory
 * (the process's own: heap, buffers) and file-backed pages (mostly the runtime's executable,
 * shared with every process running it and dropped by the kernel under pressure).
 */
export function procStatus(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN) * 1024;
    return { hwm: kb('VmHWM'), rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') };
  } catch {
    return null;
  }
}

export function procIo(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/io`, 'utf8');
    const get = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? NaN);
    return { writeBytes: get('write_bytes'), syscw: get('syscw') };
  } catch {
    return null;
  }
}

/** Samples a pid every intervalMs; stop() returns cpu% over the window, mean/max RSS. */
export function sampler(pid, intervalMs = 250) {
  const first = procSample(pid);
  let last = first;
  let maxRss = first?.rss ?? 0;
  let hwm = procStatus(pid)?.hwm ?? 0;
  let sumRss = 0;
  let n = 0;
  let anonMax = 0;
  let sumAnon = 0;
  let sumFile = 0;
  let nParts = 0;
  const parts = (st) => {
    if (!st || !Number.isFinite(st.anon)) return;
    anonMax = Math.max(anonMax, st.anon);
    sumAnon += st.anon;
    sumFile += st.file;
    nParts++;
  };
  const timer = setInterval(() => {
    const s = procSample(pid);
    if (!s) return;
    last = s;
    maxRss = Math.max(maxRss, s.rss);
    sumRss += s.rss;
    n++;
    const st = procStatus(pid);
    if (st && Number.isFinite(st.hwm)) hwm = Math.max(hwm, st.hwm);
    parts(st);
  }, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      const end = procSample(pid) ?? last;
      const st = procStatus(pid);
      if (st && Number.isFinite(st.hwm)) hwm = Math.max(hwm, st.hwm);
      if (end) maxRss = Math.max(maxRss, end.rss);
      const wall = first && end ? (end.t - first.t) / 1000 : 0;
      const cpuSec = first && end ? end.cpu - first.cpu : 0;
      return {
        wallSec: wall,
        cpuSec,
        cpuPct: wall > 0 ? (100 * cpuSec) / wall : null,
        rssMeanBytes: n ? sumRss / n : (end?.rss ?? null),
        rssMaxBytes: maxRss,
        rssEndBytes: end?.rss ?? null,
        peakRssBytes: hwm || maxRss,
        // Sampled, so a peak between two samples is missed (VmHWM has no anonymous-only twin).
        anonMaxBytes: anonMax || null,
        anonMeanBytes: nParts ? sumAnon / nParts : null,
        fileMeanBytes: nParts ? sumFile / nParts : null,
      };
    },
  };
}

// ---------------------------------------------------------------- misc

export async function freePort() {
  const s = net.createServer();
  await new Promise((res, rej) => {
    s.once('error', rej);
    s.listen(0, '127.0.0.1', res);
  });
  const port = s.address().port;
  await new Promise((r) => s.close(r));
  return port;
}

export async function waitFor(fn, { timeoutMs = 30_000, intervalMs = 100, what = 'condition' } = {}) {
  const end = Date.now() + timeoutMs;
  let lastErr;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${lastErr ? `: ${lastErr.message}` : ''}`);
    await sleep(intervalMs);
  }
}

/** The median of `xs` (the mean of the two middle values for an even count). */
export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

export function percentile(sorted, p) {
  if (!sorted.length) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export const round = (x, d = 2) => (x == null || !Number.isFinite(x) ? null : Math.round(x * 10 ** d) / 10 ** d);
export const mb = (bytes) => round(bytes / (1024 * 1024), 1);

export function run(cmd, args, opts = {}) {
  return new Promise((resolve, reject) => {
    const c = track(spawn(cmd, args, { env: childEnv(opts.env), stdio: ['ignore', 'pipe', 'pipe'], cwd: opts.cwd }));
    let stdout = '';
    let stderr = '';
    c.stdout.setEncoding('utf8').on('data', (d) => {
      stdout += d;
    });
    c.stderr.setEncoding('utf8').on('data', (d) => {
      stderr += d.length > 100_000 ? d.slice(-100_000) : d;
      if (stderr.length > 200_000) stderr = stderr.slice(-100_000);
    });
    if (opts.onSpawn) opts.onSpawn(c);
    c.once('error', reject);
    c.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

// ---------------------------------------------------------------- the real coordinator

export const OPERATOR_TOKEN = 'bench-operator-token-0123456789abcdef';

/**
 * Spawns the real coordinator (server-cli.js) on 127.0.0.1 with a config file,
 * and waits for /health/ready.
 */
export async function startCoordinator(dir, cfg = {}) {
  const port = await freePort();
  const db = path.join(dir, 'coordinator.db');
  const doc = {
    listen: { host: '127.0.0.1', port },
    db,
    heartbeat: cfg.heartbeat ?? { intervalMs: 5000, timeoutMs: 15000 },
    tickMs: cfg.tickMs ?? 500,
    defaults: cfg.defaults ?? {},
    logLevel: cfg.logLevel ?? 'info',
  };
  const configPath = path.join(dir, 'coordinator.json');
  // YAML is a superset of JSON: the coordinator's YAML loader reads this file.
  fs.writeFileSync(configPath, JSON.stringify(doc, null, 2));
  const logFd = fs.openSync(path.join(dir, 'coordinator.log'), 'a');
  const child = track(
    // BENCH_CPU_PROF=DIR writes the coordinator's V8 CPU profile there (to find where a figure goes);
    // BENCH_COORDINATOR_NODE_FLAGS adds Node flags (say --heapsnapshot-signal=SIGUSR2 to see where memory goes).
    spawn(
      process.execPath,
      [
        ...(process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : []),
        ...(process.env.BENCH_COORDINATOR_NODE_FLAGS ?? '').split(' ').filter(Boolean),
        COORDINATOR_CLI,
        '--config',
        configPath,
      ],
      {
        env: childEnv({ GUTS_UPGRADE_OPERATOR_TOKEN: OPERATOR_TOKEN }),
        stdio: ['ignore', logFd, logFd],
      },
    ),
  );
  fs.closeSync(logFd);
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    async () => {
      if (child.exitCode !== null)
        throw new Error(`coordinator exited ${child.exitCode}: ${fs.readFileSync(path.join(dir, 'coordinator.log'), 'utf8').slice(-2000)}`);
      const r = await fetch(`${url}/health/ready`).catch(() => null);
      return r?.status === 200;
    },
    { timeoutMs: 30_000, what: 'coordinator ready' },
  );
  const api = async (method, p, body) => {
    const r = await fetch(url + p, {
      method,
      headers: { authorization: `Bearer ${OPERATOR_TOKEN}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await r.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      /* not JSON */
    }
    if (r.status >= 400) throw new Error(`${method} ${p}: HTTP ${r.status} ${text.slice(0, 500)}`);
    return json;
  };
  return { child, pid: child.pid, url, wsUrl: `ws://127.0.0.1:${port}`, db, api, stop: () => stopChild(child) };
}

/** Registers nodes over the HTTP API (a few requests in flight), returning their agent tokens. */
/** Registers the nodes; `pubkeys` (id → hex) binds each to its chain validator, as `nodes add --pubkey` does. */
export async function registerNodes(coord, ids, concurrency = 8, pubkeys = null) {
  const tokens = {};
  let i = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (i < ids.length) {
        const id = ids[i++];
        const r = await coord.api('POST', '/api/v1/nodes', { id, ...(pubkeys ? { pubkey: pubkeys[id] } : {}) });
        tokens[id] = r.token;
      }
    }),
  );
  return tokens;
}

// ---------------------------------------------------------------- load generator processes

/** Forks one benchmark load-generator process (simulated agents, see loadgen.js). */
export function forkLoadgen() {
  const child = track(fork(LOADGEN, [], { env: childEnv(), stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  let seq = 0;
  const waiting = new Map();
  child.on('message', (m) => {
    const w = waiting.get(m.reqId);
    if (w) {
      waiting.delete(m.reqId);
      if (m.error) w.reject(new Error(m.error));
      else w.resolve(m);
    }
  });
  child.once('exit', (code) => {
    for (const w of waiting.values()) w.reject(new Error(`load generator exited ${code}`));
    waiting.clear();
  });
  const call = (msg) =>
    new Promise((resolve, reject) => {
      const reqId = ++seq;
      waiting.set(reqId, { resolve, reject });
      child.send({ ...msg, reqId });
    });
  return { child, pid: child.pid, call, stop: () => stopChild(child) };
}

export function fmtBytes(b) {
  if (b == null) return '–';
  if (b >= 1024 ** 3) return `${(b / 1024 ** 3).toFixed(2)} GiB`;
  return `${(b / 1024 ** 2).toFixed(1)} MiB`;
}
