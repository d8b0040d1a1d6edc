/**
 * 2. Per-node downtime, 4b. the agent's peak RSS during a big backup, and
 * 5. backup throughput — all on the same real data dirs (random, not sparse,
 * made with `guts-node init --size-mb N`), generated once per size.
 *
 * Per size, on a real one-validator simulator node run detached with a pid file:
 *   ours: the real agent CLI `upgrade` (process driver) 1.0.0 -> 1.0.1: pre-copy
 *         backup while the node runs, stop, delta, swap, start, ready. Downtime
 *         is the agent's own stop->ready figure (result.downtimeMs); the agent
 *         process is sampled for peak RSS (VmHWM).
 *   seed: the old script on the same node and data, same version path: stop,
 *         `tar czf` the data dir, swap the binary, start, poll /health/ready
 *         every 100 ms (as the agent does); downtime = stop -> ready.
 *   throughput (node stopped, data static): the agent's BackupStore.createBase
 *         (tar-writer.ts: sha256 on a worker while writing, fsync, as the pipeline
 *         does) vs GNU `tar cf` + fsync of the archive (`sync FILE`), alternating
 *         rounds, with the CPU time each spends per GiB.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import * as sim from '@guts-upgrade/simulator';
import { BackupStore, Journal, resolveConfig } from '@guts-upgrade/agent';
import { processStartTime } from '@guts-upgrade/agent/process-identity';
import { writeTar } from '@guts-upgrade/agent/tar-writer';
import { SIM_CLI, childEnv, childrenCpuSec, fmtBytes, mb, median, removeDir, round, run, sampler, stopPid, tmpDir, trackPid, waitFor } from './lib/common.js';
import { agentResult, agentRuntime } from './lib/agent-runtime.js';

/** The agent's checks in the benches: generous waits for big data, a short settle (the figures are downtime, not checks). */
export const BENCH_CHECKS = {
  readyTimeoutMs: 60_000,
  syncTimeoutMs: 30_000,
  advanceWindowMs: 1500,
  stabilizeMs: 500,
  httpTimeoutMs: 2000,
  commandTimeoutMs: 60_000,
  maxErrorRateIncrease: 0.5,
  maxLatencyFactor: 20,
  minLatencyMs: 500,
};

/** Starts the node the way the agent's process driver does (detached, pid file), so the agent adopts it. */
export async function startNode(node) {
  const log = fs.openSync(node.logFile, 'a');
  const child = spawn(node.binary, ['--config', node.configPath], {
    detached: true,
    stdio: ['ignore', log, log],
    env: childEnv(),
    cwd: path.dirname(node.configPath),
  });
  await new Promise((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  fs.closeSync(log);
  child.on('exit', () => {});
  child.unref();
  trackPid(child.pid);
  fs.writeFileSync(node.pidFile, `${child.pid} ${processStartTime(child.pid)}\n`);
  return child.pid;
}

function nodePid(node) {
  try {
    return Number(fs.readFileSync(node.pidFile, 'utf8').trim().split(/\s+/)[0]) || null;
  } catch {
    return null;
  }
}

export async function ready(node) {
  return fetch(`${node.apiUrl}/health/ready`, { signal: AbortSignal.timeout(1000) }).then(
    (r) => r.status === 200,
    () => false,
  );
}

export async function stopNode(node) {
  const pid = nodePid(node);
  if (pid) await stopPid(pid, 30_000);
  fs.rmSync(node.pidFile, { force: true });
}

async function setup(sizeMb, log) {
  const dir = tmpDir(`data-${sizeMb}mb`);
  const manifest = sim.buildArtifacts({ outDir: path.join(dir, 'artifacts') });
  const server = await sim.startArtifactServer({ dir: path.join(dir, 'artifacts'), host: '127.0.0.1' });
  // Signed or nothing, as on a validator host: the agent resolves versions through this repository.
  const releases = sim.createReleaseSigner(path.join(dir, 'artifacts', 'release'));
  const [d] = await sim.createCluster({ n: 1, dir: path.join(dir, 'cluster'), logLevel: 'warn' });
  log(`data: guts-node init --size-mb ${sizeMb}`);
  const t0 = Date.now();
  const init = await run(process.execPath, [SIM_CLI, 'init', '--data-dir', d.dataDir, '--size-mb', String(sizeMb)]);
  if (init.code !== 0) throw new Error(`guts-node init failed: ${init.stderr}`);
  const initSec = (Date.now() - t0) / 1000;
  const stateDir = path.join(d.dir, 'agent-state');
  fs.mkdirSync(stateDir, { recursive: true });
  const node = {
    ...d,
    binary: path.join(d.dir, 'bin', 'guts-node'),
    stateDir,
    pidFile: path.join(stateDir, 'guts-node.pid'),
    logFile: path.join(stateDir, 'guts-node.log'),
    agentConfig: path.join(d.dir, 'agent.yaml'),
  };
  sim.installBinary(sim.findArtifact(manifest, '1.0.0').path, node.binary);
  const agentDoc = {
    nodeId: d.name,
    service: { driver: 'process', args: ['--config', '{config}'], stopTimeoutMs: 10_000, pidFile: node.pidFile, logFile: node.logFile },
    node: { binary: node.binary, dataDir: d.dataDir, config: d.configPath, apiUrl: d.apiUrl, metricsUrl: d.metricsUrl },
    stateDir,
    backup: { retention: 1 },
    release: { repository: `${server.url}/release`, root: releases.root },
    fetch: { retries: 3, backoffMs: 50, timeoutMs: 10_000 },
    checks: BENCH_CHECKS,
    diskMarginBytes: 0,
    logLevel: 'warn',
  };
  fs.writeFileSync(node.agentConfig, stringify(agentDoc));
  await startNode(node);
  await waitFor(() => ready(node), { timeoutMs: 60_000, what: 'node ready' });
  const art = (v) => {
    const a = sim.findArtifact(manifest, v);
    releases.sign(a.path, v);
    return { version: v, url: `${server.url}/${a.file}`, sha256: a.sha256, path: a.path };
  };
  return { dir, node, server, art, agentDoc, initSec };
}

/** Ours: the agent's real pipeline through its CLI. */
async function oursUpgrade(env, log, version = '1.0.1') {
  const { node, art } = env;
  const to = art(version);
  const rt = await agentRuntime(log);
  log(`data: agent CLI upgrade -> ${version}`);
  let smp = null;
  let pid = null;
  const t0 = Date.now();
  const r = await run(rt.node, [rt.cli, 'upgrade', '--config', node.agentConfig, '--to', to.version, '--json'], {
    env: { GUTS_UPGRADE_CLI_LOG_LEVEL: 'warn' },
    onSpawn: (c) => {
      pid = c.pid;
      smp = sampler(c.pid, 100);
    },
  });
  // The process is gone: the sampler's last /proc reading before exit holds the peak.
  const usage = smp.stop();
  const wallMs = Date.now() - t0;
  const result = agentResult(r, 'agent upgrade');
  // Progress lines on stderr: "[ISO] backup    started" ... "[ISO] backup    done".
  const at = (step, state) => {
    const m = new RegExp(`^\\[([^\\]]+)\\] ${step}\\s+${state}`, 'm').exec(r.stderr);
    return m ? Date.parse(m[1]) : null;
  };
  const backupMs = at('backup', 'done') && at('backup', 'started') ? at('backup', 'done') - at('backup', 'started') : null;
  return {
    downtimeMs: result.downtimeMs,
    totalMs: wallMs,
    preCopyMs: backupMs,
    agentPeakRssBytes: usage.peakRssBytes,
    agentPeakAnonBytes: usage.anonMaxBytes,
    agentPid: pid,
    runtime: rt.label,
  };
}

/** The seed's procedure: stop, tar czf the data dir, swap the binary, start, wait ready. */
async function seedUpgrade(env, log) {
  const { node, art, dir } = env;
  // Back to 1.0.0 first (not timed), so both strategies take the same 1.0.0 -> 1.0.1 path.
  await stopNode(node);
  sim.installBinary(art('1.0.0').path, node.binary);
  await startNode(node);
  await waitFor(() => ready(node), { timeoutMs: 60_000, what: 'node ready on 1.0.0' });
  const to = art('1.0.1');
  const tgz = path.join(dir, 'seed-backup.tgz');
  log('data: seed script (stop, tar czf, swap, start)');
  const t0 = Date.now();
  await stopNode(node);
  const tStop = Date.now();
  const tar = await run('tar', ['czf', tgz, '-C', node.dataDir, '.']);
  if (tar.code !== 0) throw new Error(`tar czf failed: ${tar.stderr}`);
  const tTar = Date.now();
  sim.installBinary(to.path, node.binary);
  await startNode(node);
  await waitFor(() => ready(node), { timeoutMs: 120_000, intervalMs: 100, what: 'node ready after the seed upgrade' });
  const t1 = Date.now();
  const size = fs.statSync(tgz).size;
  fs.rmSync(tgz, { force: true });
  return { downtimeMs: t1 - t0, stopMs: tStop - t0, tarCzfMs: tTar - tStop, startToReadyMs: t1 - tTar, tgzBytes: size };
}

/**
 * The node's own restart, the floor for a binary swap (issue 17, target 1):
 * stop, optionally put `version`'s binary in place (a plain copy, as the
 * agent's install is a rename), start, poll /health/ready every 100 ms as the
 * agent does. No backup, no checks: only what any restart costs.
 */
async function bareRestart(env, version) {
  const { node, art } = env;
  const t0 = Date.now();
  await stopNode(node);
  if (version) sim.installBinary(art(version).path, node.binary);
  await startNode(node);
  await waitFor(() => ready(node), { timeoutMs: 120_000, intervalMs: 100, what: 'node ready after a bare restart' });
  return Date.now() - t0;
}

/** Puts the node back on `version` (not timed) and frees the agent's backups, so the next run starts alike. */
async function resetTo(env, version) {
  const { node, art } = env;
  await stopNode(node);
  sim.installBinary(art(version).path, node.binary);
  fs.rmSync(path.join(node.stateDir, 'backups'), { recursive: true, force: true });
  await startNode(node);
  await waitFor(() => ready(node), { timeoutMs: 60_000, what: `node ready on ${version}` });
}

/** The data dir as it is now, copied aside (node stopped), and a way to put it back. */
async function snapshotData(env) {
  const { node, dir } = env;
  const snap = path.join(dir, 'data-snapshot');
  await stopNode(node);
  fs.rmSync(snap, { recursive: true, force: true });
  const r = await run('cp', ['-a', node.dataDir, snap]);
  if (r.code !== 0) throw new Error(`cp -a failed: ${r.stderr}`);
  return async () => {
    await stopNode(node);
    fs.rmSync(node.dataDir, { recursive: true, force: true });
    const c = await run('cp', ['-a', snap, node.dataDir]);
    if (c.code !== 0) throw new Error(`cp -a failed: ${c.stderr}`);
  };
}

/**
 * Agent downtime against the node's own restart, alternating, `runs` times each:
 * a patch (1.0.0 -> 1.0.1, no migration) against a bare restart of 1.0.0, and
 * a minor (1.0.1 -> 1.1.0, the node migrates at start) against 1.1.0's first
 * start on the same 1.0.1 data (restored from a copy between runs).
 */
async function restartBaseline(env, log, runs) {
  const out = {};
  const patch = { bare: [], ours: [] };
  for (let i = 0; i < runs; i++) {
    await resetTo(env, '1.0.0');
    log(`data: bare restart of 1.0.0 (${i + 1}/${runs})`);
    patch.bare.push(await bareRestart(env, null));
    patch.ours.push((await oursUpgrade(env, log, '1.0.1')).downtimeMs);
  }
  const minor = { bare: [], ours: [] };
  await resetTo(env, '1.0.1');
  const restore = await snapshotData(env);
  try {
    for (let i = 0; i < runs; i++) {
      await restore();
      await resetTo(env, '1.0.1');
      log(`data: first start of 1.1.0 on 1.0.1 data (${i + 1}/${runs})`);
      minor.bare.push(await bareRestart(env, '1.1.0'));
      await restore();
      await resetTo(env, '1.0.1');
      minor.ours.push((await oursUpgrade(env, log, '1.1.0')).downtimeMs);
    }
  } finally {
    fs.rmSync(path.join(env.dir, 'data-snapshot'), { recursive: true, force: true });
  }
  for (const [kind, r] of Object.entries({ patch, minor })) {
    out[kind] = {
      bareMs: r.bare,
      oursMs: r.ours,
      bareMedianMs: median(r.bare),
      oursMedianMs: median(r.ours),
      ratio: round(median(r.ours) / median(r.bare), 2),
    };
  }
  return out;
}

/** One agent backup of the data dir: wall and CPU time (every thread of this process: the hashing worker too). */
/** Wall and CPU time (this process) of `write`, which returns the archive's size. */
async function timedInProcess(sizeBytes, write) {
  const cpu0 = process.cpuUsage();
  const t0 = Date.now();
  const archiveBytes = await write();
  const ms = Date.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { ms, cpuSec: (cpu.user + cpu.system) / 1e6, archiveBytes, MBps: sizeBytes / (1024 * 1024) / (ms / 1000) };
}

async function agentRound(store, sizeBytes) {
  const r = await timedInProcess(sizeBytes, async () => (await store.createBase('bench-tp', null, '1.0.0')).meta.dataBase?.size ?? null);
  store.discard('bench-tp');
  return r;
}

/**
 * The same archive writer with direct writes off (every byte through the page cache, then fsync):
 * how the agent wrote before O_DIRECT, side by side in the same run.
 */
async function cachedRound(dataDir, file, sizeBytes) {
  const entries = fs.readdirSync(dataDir, { recursive: true }).sort();
  const r = await timedInProcess(sizeBytes, async () => (await writeTar(file, dataDir, entries, { direct: false })).size);
  fs.rmSync(file, { force: true });
  return r;
}

/** One GNU `tar cf` + `sync FILE` of the same dir: wall and CPU time of both children. */
async function tarRound(dataDir, tarFile, sizeBytes) {
  const cpu0 = childrenCpuSec();
  const t0 = Date.now();
  const r = await run('tar', ['cf', tarFile, '-C', dataDir, '.']);
  if (r.code !== 0) throw new Error(`tar cf failed: ${r.stderr}`);
  const msWithoutFsync = Date.now() - t0;
  await run('sync', [tarFile]);
  const ms = Date.now() - t0;
  const cpuSec = childrenCpuSec() - cpu0;
  const archiveBytes = fs.statSync(tarFile).size;
  fs.rmSync(tarFile, { force: true });
  return { ms, msWithoutFsync, cpuSec, archiveBytes, MBps: sizeBytes / (1024 * 1024) / (ms / 1000) };
}

/**
 * The agent's backup against `tar cf` + fsync, alternating (tar, agent, agent, tar, ...) so that
 * neither always runs on a warmer cache or a busier disk; the median of each and the spread of
 * the per-round ratios. Rounds: 3 up to 2 GB of data, 1 above (each reads and writes it all).
 */
async function throughput(env, sizeBytes, log) {
  const { node, dir, agentDoc } = env;
  await stopNode(node); // static data: both read exactly the same bytes
  const rounds = sizeBytes <= 2 * 1024 ** 3 ? 3 : 1;
  // The agent's backup code, in this process, on its own journal and backup dir.
  const stateDir = path.join(dir, 'bench-backup-state');
  fs.mkdirSync(stateDir, { recursive: true });
  const config = resolveConfig({ ...agentDoc, stateDir, backup: { dir: path.join(dir, 'bench-backups'), retention: 1 } }, {}, dir);
  const journal = new Journal(stateDir);
  const tarFile = path.join(dir, 'gnu.tar');
  const agent = [];
  const tar = [];
  const cached = [];
  const what = { agent: 'agent BackupStore.createBase', tar: 'GNU tar cf + sync', cached: 'agent writer through the page cache' };
  try {
    const store = new BackupStore(config, journal);
    for (let i = 0; i < rounds; i++) {
      // Each contender first, second and third in turn.
      const order = ['tar', 'agent', 'cached'];
      for (const who of [...order.slice(i % 3), ...order.slice(0, i % 3)]) {
        log(`data: throughput round ${i + 1}/${rounds}, ${what[who]}`);
        if (who === 'agent') agent.push(await agentRound(store, sizeBytes));
        else if (who === 'cached') cached.push(await cachedRound(node.dataDir, path.join(dir, 'cached.tar'), sizeBytes));
        else tar.push(await tarRound(node.dataDir, tarFile, sizeBytes));
      }
    }
  } finally {
    journal.close();
  }
  const gib = sizeBytes / 1024 ** 3;
  const ratios = agent.map((a, i) => a.MBps / tar[i].MBps);
  const summary = (xs) => ({
    ms: median(xs.map((x) => x.ms)),
    MBps: round(median(xs.map((x) => x.MBps)), 1),
    cpuSecPerGiB: round(median(xs.map((x) => x.cpuSec)) / gib, 2),
    archiveBytes: xs[0].archiveBytes,
  });
  return {
    rounds,
    agent: summary(agent),
    gnuTar: { ...summary(tar), msWithoutFsync: median(tar.map((x) => x.msWithoutFsync)) },
    agentOverTar: round(median(ratios), 2),
    ratioMin: round(Math.min(...ratios), 2),
    ratioMax: round(Math.max(...ratios), 2),
    cached: summary(cached),
    cachedOverTar: round(median(cached.map((c, i) => c.MBps / tar[i].MBps)), 2),
  };
}

function dirBytes(d) {
  let total = 0;
  const walk = (p) => {
    for (const e of fs.readdirSync(p, { withFileTypes: true })) {
      const f = path.join(p, e.name);
      if (e.isDirectory()) walk(f);
      else if (e.isFile()) total += fs.statSync(f).size;
    }
  };
  walk(d);
  return total;
}

export async function dataBench({ quick, log, opts, downtime, throughput: wantTp, peakRss }) {
  const sizesGb = opts.sizesGb ?? (quick ? [0.1] : [1, 10]);
  const result = {
    downtime: { title: 'Per-node downtime (stop → ready): agent pipeline vs seed script', rows: [], restart: [] },
    throughput: { title: 'Backup throughput: agent BackupStore vs GNU tar cf + fsync', rows: [] },
    peakRss: { title: 'Agent peak RSS during a backup (real agent CLI upgrade process)', rows: [] },
  };
  for (const gb of sizesGb) {
    const sizeMb = Math.round(gb * 1024);
    const env = await setup(sizeMb, log);
    try {
      const bytes = dirBytes(env.node.dataDir);
      const label = fmtBytes(bytes);
      const ours = await oursUpgrade(env, log);
      // Free the agent's backup of this size before the next copies.
      fs.rmSync(path.join(env.node.stateDir, 'backups'), { recursive: true, force: true });
      if (downtime) {
        const seed = await seedUpgrade(env, log);
        result.downtime.rows.push({
          data: label,
          dataBytes: bytes,
          initSec: round(env.initSec, 1),
          oursDowntimeMs: ours.downtimeMs,
          oursTotalMs: ours.totalMs,
          oursPreCopyMs: ours.preCopyMs,
          seedDowntimeMs: seed.downtimeMs,
          seedTarCzfMs: seed.tarCzfMs,
          seedStartToReadyMs: seed.startToReadyMs,
          seedTgzBytes: seed.tgzBytes,
          ratio: round(ours.downtimeMs / seed.downtimeMs, 4),
        });
        log(`  ${label}: downtime ours ${ours.downtimeMs} ms vs seed ${seed.downtimeMs} ms`);
        const base = await restartBaseline(env, log, opts.restartRuns ?? (quick ? 1 : 3));
        result.downtime.restart.push({ data: label, dataBytes: bytes, ...base });
        log(`  ${label}: ours / bare restart: patch ×${base.patch.ratio}, minor ×${base.minor.ratio}`);
      }
      if (peakRss) {
        result.peakRss.rows.push({
          data: label,
          dataBytes: bytes,
          peakRssBytes: ours.agentPeakRssBytes,
          peakRssMiB: mb(ours.agentPeakRssBytes),
          peakOverData: round(ours.agentPeakRssBytes / bytes, 4),
          anonPeakMiB: ours.agentPeakAnonBytes == null ? null : mb(ours.agentPeakAnonBytes),
          runtime: ours.runtime,
        });
      }
      if (wantTp) {
        const tp = await throughput(env, bytes, log);
        result.throughput.rows.push({
          data: label,
          dataBytes: bytes,
          rounds: tp.rounds,
          agentMBps: tp.agent.MBps,
          agentMs: tp.agent.ms,
          agentCpuSecPerGiB: tp.agent.cpuSecPerGiB,
          tarMBps: tp.gnuTar.MBps,
          tarMs: tp.gnuTar.ms,
          tarMsWithoutFsync: tp.gnuTar.msWithoutFsync,
          tarCpuSecPerGiB: tp.gnuTar.cpuSecPerGiB,
          ratio: tp.agentOverTar,
          ratioMin: tp.ratioMin,
          ratioMax: tp.ratioMax,
          cachedMBps: tp.cached.MBps,
          cachedCpuSecPerGiB: tp.cached.cpuSecPerGiB,
          cachedRatio: tp.cachedOverTar,
        });
        log(
          `  ${label}: agent ${tp.agent.MBps} MB/s (${tp.agent.cpuSecPerGiB} CPU s/GiB) vs tar ${tp.gnuTar.MBps} MB/s (${tp.gnuTar.cpuSecPerGiB} CPU s/GiB): ${tp.agentOverTar}`,
        );
      }
    } finally {
      await stopNode(env.node).catch(() => undefined);
      await env.server.close().catch(() => undefined);
      removeDir(env.dir);
    }
  }
  return result;
}
