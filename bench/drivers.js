/**
 * 7. Per-node downtime under each service driver, and a blue-green switch (issue 16).
 *
 * On a private dockerd (packages/agent/test/docker-lab.ts: its own data root,
 * no bridge, no iptables, containers on the host network), one one-validator
 * simulator node with a data dir of ~1 GiB (random, made once) is run in turn
 * by the process driver (a detached process with a pid file), the docker
 * driver (a container, the node's directory bind-mounted at the same path)
 * and the compose driver (a Compose v1 service of the same container). For
 * each, alternating, `runs` times:
 *   bare:    the driver's own stop, start and /health/ready polled every
 *            100 ms (no upgrade, no backup, no checks): what any restart costs;
 *   upgrade: the agent CLI's `upgrade` 1.0.0 -> 1.0.1 (a patch: no migration),
 *            downtime as the agent measures it (result.downtimeMs, stop -> ready);
 *            then, not timed, the agent's `rollback` puts 1.0.0 back.
 * Reported: medians, the spread (min–max) of each, and upgrade / bare.
 *
 * Blue-green (packages/agent/test/blue-green-lab.ts): a follower in a
 * container behind nginx beside two validators; a client loop sends ~50
 * requests/s through nginx from ~10 s before the switch to 10 s after it and
 * counts failed requests; the switch time is the agent's (proxy rewrite and
 * reload until the front answers with the new version), the overlap is how
 * long the old version still answered after the new one first did.
 */
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import * as sim from '@guts-upgrade/simulator';
import { createDriver, loadConfig } from '@guts-upgrade/agent';
import { composeSkipReason, imageTag, startComposeProject, startDockerLab } from '@guts-upgrade/agent/test/docker-lab';
import { clientLoop, NGINX, startBlueGreenLab } from '@guts-upgrade/agent/test/blue-green-lab';
import { median, round, run, sleep, waitFor } from './lib/common.js';
import { agentResult, agentRuntime } from './lib/agent-runtime.js';
import { BENCH_CHECKS, ready } from './data.js';

/** What startDockerLab and the labs expect of a test: teardowns, run here last-in first-out. */
function teardowns() {
  const fns = [];
  return {
    teardown: (fn) => fns.push(fn),
    async run(log) {
      while (fns.length) {
        try {
          await fns.pop()();
        } catch (err) {
          log(`drivers: cleanup: ${err.message}`);
        }
      }
    },
  };
}

/** One agent CLI command with --json; its result, which must be a success. */
async function agent(rt, configPath, args, what) {
  const r = await run(rt.node, [rt.cli, ...args, '--config', configPath, '--json'], { env: { GUTS_UPGRADE_CLI_LOG_LEVEL: 'warn' } });
  return agentResult(r, what);
}

const spread = (xs) => ({ runsMs: xs, medianMs: median(xs), minMs: Math.min(...xs), maxMs: Math.max(...xs) });

/**
 * Bare restarts and patch upgrades of the node under one driver, alternating.
 * `release` is what the repository signs as 1.0.1 for this driver (a binary or an image archive).
 */
async function measureDriver(env, kind, service, release, runs) {
  const { node, dir, rt, log, tap, releases } = env;
  const stateDir = path.join(dir, `agent-${kind}`);
  fs.mkdirSync(stateDir, { recursive: true });
  const configPath = path.join(stateDir, 'agent.yaml');
  fs.writeFileSync(
    configPath,
    stringify({
      nodeId: node.name,
      service: { stopTimeoutMs: 10_000, ...service },
      node: {
        ...(kind === 'process' ? { binary: env.binary } : {}),
        dataDir: node.dataDir,
        config: node.configPath,
        apiUrl: node.apiUrl,
        metricsUrl: node.metricsUrl,
      },
      stateDir,
      backup: { retention: 1 },
      release: { repository: env.repository, root: releases.root },
      fetch: { retries: 3, backoffMs: 50, timeoutMs: 30_000 },
      checks: BENCH_CHECKS,
      diskMarginBytes: 0,
      logLevel: 'warn',
    }),
  );
  const driver = createDriver(loadConfig(configPath, {}));
  // The process driver starts the node here; a container the lab started is running already.
  tap.teardown(() => driver.stop());
  await driver.start();
  await waitFor(() => ready(node), { timeoutMs: 60_000, what: `${kind}: node ready` });
  const bare = [];
  const upgrade = [];
  for (let i = 0; i < runs; i++) {
    log(`drivers: ${kind}: bare restart (${i + 1}/${runs})`);
    const t0 = Date.now();
    await driver.stop();
    await driver.start();
    await waitFor(() => ready(node), { timeoutMs: 120_000, intervalMs: 100, what: `${kind}: node ready after a bare restart` });
    bare.push(Date.now() - t0);

    log(`drivers: ${kind}: agent upgrade 1.0.0 -> 1.0.1 (${i + 1}/${runs})`);
    releases.sign(release, '1.0.1');
    const up = await agent(rt, configPath, ['upgrade', '--to', '1.0.1'], `${kind}: upgrade`);
    upgrade.push(up.downtimeMs);
    // Back on 1.0.0 for the next pair (not timed); the backup goes, so every upgrade copies the whole data again.
    await agent(rt, configPath, ['rollback'], `${kind}: rollback`);
    fs.rmSync(path.join(stateDir, 'backups'), { recursive: true, force: true });
  }
  await driver.stop();
  const b = spread(bare);
  const u = spread(upgrade);
  log(`drivers: ${kind}: upgrade ${u.medianMs} ms vs bare ${b.medianMs} ms`);
  return { driver: kind, bare: b, upgrade: u, ratio: round(u.medianMs / b.medianMs, 2) };
}

/** The blue-green switch of a follower behind nginx, with the client loop around it. */
async function measureBlueGreen(env, lab, tap, archive) {
  const { rt, log } = env;
  const bg = await startBlueGreenLab(tap, lab, { image: imageTag('1.0.0') });
  const release = path.join(bg.artifacts, path.basename(archive));
  fs.linkSync(archive, release);
  bg.releases.sign(release, '1.0.1');
  const configPath = path.join(bg.dir, 'agent.yaml');
  bg.writeConfig(configPath, { logLevel: 'warn' });
  log('drivers: blue-green: client loop through nginx, then the agent upgrade 1.0.0 -> 1.0.1');
  const loop = clientLoop(bg.front, '1.0.0', '1.0.1');
  const loopStart = Date.now();
  // The copy of the follower's data, green's start and its checks take a few seconds before the switch.
  await sleep(8000);
  let up;
  try {
    up = await agent(rt, configPath, ['upgrade', '--to', '1.0.1'], 'blue-green: upgrade');
  } catch (err) {
    await loop.stop();
    throw err;
  }
  await waitFor(() => loop.firstNew !== null, { what: 'the client sees 1.0.1', timeoutMs: 30_000 });
  await sleep(Math.max(0, loop.firstNew + 10_000 - Date.now()));
  await loop.stop();
  const loopEnd = Date.now();
  const sw = up.evidence?.checks?.find((c) => c.name === 'switch');
  return {
    requests: loop.total,
    failed: loop.failed,
    errors: loop.errors,
    requestsPerSec: round(loop.total / ((loopEnd - loopStart) / 1000), 1),
    beforeSwitchMs: loop.firstNew - loopStart,
    afterSwitchMs: loopEnd - loop.firstNew,
    switchMs: sw?.waitedMs ?? null,
    overlapMs: loop.lastOld == null ? null : loop.lastOld - loop.firstNew,
    downtimeMs: up.downtimeMs ?? null,
  };
}

export async function driversBench({ quick, log, opts }) {
  const why = composeSkipReason();
  if (why) throw new Error(`drivers: ${why}`);
  if (!fs.existsSync(NGINX)) throw new Error('drivers: no nginx: apt-get install nginx-light');
  const runs = opts.restartRuns ?? (quick ? 1 : 3);
  const sizeMb = opts.driversDataMb ?? (quick ? 256 : 1024);
  const tap = teardowns();
  const t0 = Date.now();
  try {
    log('drivers: private dockerd, base image');
    const lab = await startDockerLab(tap);
    const dir = path.join(lab.dir, 'drivers');
    const artifacts = path.join(dir, 'artifacts');
    const manifest = sim.buildArtifacts({ outDir: artifacts });
    const server = await sim.startArtifactServer({ dir: artifacts, host: '127.0.0.1' });
    tap.teardown(() => server.close());
    const releases = sim.createReleaseSigner(path.join(artifacts, 'release'));
    await lab.image('1.0.0');
    const archive = await lab.archive(artifacts, '1.0.1');
    log(`drivers: a ${sizeMb} MiB data dir`);
    const [node] = await sim.createCluster({ n: 1, dir: path.join(dir, 'cluster'), logLevel: 'warn', dataSizeMb: sizeMb, dataVersion: '1.0.0' });
    const binary = path.join(node.dir, 'bin', 'guts-node');
    sim.installBinary(sim.findArtifact(manifest, '1.0.0').path, binary);
    const rt = await agentRuntime(log);
    const env = { node, dir, rt, log, tap, releases, binary, repository: `${server.url}/release` };
    const rows = [];

    // The same node and data under each driver in turn; each hands the node over stopped.
    const own = path.join(dir, 'process');
    fs.mkdirSync(own, { recursive: true });
    const processService = {
      driver: 'process',
      args: ['--config', '{config}'],
      pidFile: path.join(own, 'guts-node.pid'),
      logFile: path.join(own, 'guts-node.log'),
    };
    rows.push(await measureDriver(env, 'process', processService, sim.findArtifact(manifest, '1.0.1').path, runs));

    await (
      await lab.docker.createContainer({
        name: 'guts-node',
        Image: imageTag('1.0.0'),
        Cmd: ['--config', node.configPath],
        HostConfig: { NetworkMode: 'host', Binds: [`${node.dir}:${node.dir}`], RestartPolicy: { Name: 'unless-stopped', MaximumRetryCount: 0 } },
      })
    ).start();
    rows.push(await measureDriver(env, 'docker', { driver: 'docker', container: 'guts-node', dockerSocket: lab.socket }, archive, runs));
    await lab.docker.getContainer('guts-node').remove({ force: true });

    const project = await startComposeProject(tap, lab, {
      dir: path.join(dir, 'guts'),
      image: imageTag('1.0.0'),
      configPath: node.configPath,
      mount: node.dir,
    });
    rows.push(await measureDriver(env, 'compose', { driver: 'compose', file: project.file, service: 'guts-node', dockerSocket: lab.socket }, archive, runs));
    await project.run(['down']);

    const blueGreen = await measureBlueGreen(env, lab, tap, archive);
    log(`drivers: blue-green: ${blueGreen.failed} of ${blueGreen.requests} requests failed, switch ${blueGreen.switchMs} ms`);
    return {
      title: 'Per-node downtime per service driver, and a blue-green switch',
      settings: { runs, dataMiB: sizeMb, runtime: rt.label, dockerd: 'private, vfs storage, host network' },
      rows,
      blueGreen,
      wallSec: Math.round((Date.now() - t0) / 1000),
    };
  } finally {
    await tap.run(log);
  }
}
