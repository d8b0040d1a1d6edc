/**
 * The docker service driver against a real dockerd (started here, removed at
 * the end): patch, minor and major upgrades of a containerized simulator node
 * from signed image archives (`docker save`, as an air-gapped host gets them);
 * a bad build rolled back to the previous image with the data restored; the
 * container recreated with its configuration each time; a kill -9 between the
 * old container's removal and the new one's creation recovered from the
 * journal; the rollback command.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import YAML from 'yaml';
import { createCluster, createReleaseSigner, startArtifactServer, waitFor } from '@guts-upgrade/simulator';
import { cliRunner, FAST_TIMINGS, pauseAndKill, TEST_CHECKS } from './helpers.js';
import { dockerSkipReason, startDockerLab } from './docker-lab.js';

const skip = dockerSkipReason();

t.test('docker driver: upgrades, a bad build, a crash and the rollback command, on a real engine', { skip: skip ?? false }, async (t) => {
  const lab = await startDockerLab(t);
  const dir = path.join(lab.dir, 'rig');
  const clusterDir = path.join(dir, 'cluster');
  const artifacts = path.join(dir, 'artifacts');
  fs.mkdirSync(artifacts, { recursive: true });
  const [node] = await createCluster({ n: 1, dir: clusterDir, timings: FAST_TIMINGS, dataSizeMb: 1, dataVersion: '1.0.0' });
  const base = await lab.image('1.0.0');
  // The releases, each an image archive the release repository signs as that version.
  const archives = {
    '1.0.1': await lab.archive(artifacts, '1.0.1'),
    '1.1.0-corrupts': await lab.archive(artifacts, '1.1.0', 'corrupts'),
    '1.1.0': await lab.archive(artifacts, '1.1.0'),
    '2.0.0': await lab.archive(artifacts, '2.0.0'),
  };
  const server = await startArtifactServer({ dir: artifacts });
  t.teardown(() => server.close());
  const releases = createReleaseSigner(path.join(artifacts, 'release'));

  // The operator's container: host network, the node's files bind-mounted at the same paths.
  const created = await lab.docker.createContainer({
    name: 'guts-node',
    Image: base.tag,
    Cmd: ['--config', node!.configPath],
    Env: ['GUTS_TEST_MARK=kept'],
    Labels: { 'example.owner': 'ops' },
    HostConfig: { NetworkMode: 'host', Binds: [`${clusterDir}:${clusterDir}`], RestartPolicy: { Name: 'unless-stopped', MaximumRetryCount: 0 } },
  });
  await created.start();
  const ready = async () => (await fetch(`${node!.apiUrl}/health/ready`).catch(() => null))?.status === 200;
  await waitFor(ready, { what: 'container node ready', timeoutMs: 30_000 });

  const configPath = path.join(dir, 'agent.yaml');
  fs.writeFileSync(
    configPath,
    YAML.stringify({
      nodeId: 'd0',
      service: { driver: 'docker', container: 'guts-node', dockerSocket: lab.socket, stopTimeoutMs: 5000 },
      node: { dataDir: node!.dataDir, config: node!.configPath, apiUrl: node!.apiUrl, metricsUrl: node!.metricsUrl },
      stateDir: path.join(dir, 'state'),
      backup: { retention: 2 },
      release: { repository: `${server.url}/release`, root: releases.root },
      fetch: { retries: 3, backoffMs: 50, timeoutMs: 30_000 },
      // A container takes longer to come up than a process; recreating one is part of the command.
      checks: { ...TEST_CHECKS, readyTimeoutMs: 20_000, stabilizeMs: 1000, commandTimeoutMs: 60_000 },
      commands: { migrate: ['{binary}', 'migrate', '--from', '{from}', '--to', '{to}', '--data-dir', '{dataDir}'] },
      diskMarginBytes: 0,
    }),
  );
  const { cli, spawnCli } = cliRunner(t, configPath);
  const upgrade = (version: string) => ['upgrade', '--to', version, '--json'];
  const inspect = () => lab.docker.getContainer('guts-node').inspect();
  const height = async () => ((await (await fetch(`${node!.apiUrl}/api/consensus/status`)).json()) as { finalized_height?: number }).finalized_height ?? 0;
  const health = async () => ((await (await fetch(`${node!.apiUrl}/health`)).json()) as { version?: string }).version;
  const downtimes: Record<string, number> = {};

  /** The configuration the operator set survives every recreation. */
  const checkConfig = async (what: string) => {
    const info = await inspect();
    t.ok(info.Config.Env.includes('GUTS_TEST_MARK=kept'), `${what}: env kept`);
    t.same(info.Config.Cmd, ['--config', node!.configPath], `${what}: command kept`);
    t.equal(info.HostConfig.RestartPolicy?.Name, 'unless-stopped', `${what}: restart policy kept`);
    t.same(info.HostConfig.Binds, [`${clusterDir}:${clusterDir}`], `${what}: volume kept`);
    t.equal(info.HostConfig.NetworkMode, 'host', `${what}: network mode kept`);
    t.equal(info.Config.Labels['example.owner'], 'ops', `${what}: labels kept`);
    t.ok(info.State.Running, `${what}: running`);
  };

  const good = async (label: string, version: string, migration: string) => {
    const before = (await inspect()).Image;
    const { code, res, stderr } = await cli(upgrade(version));
    t.equal(code, 0, `${label}: exit 0 (${res.code ?? ''} ${res.message ?? ''} ${code === 0 ? '' : stderr.slice(-600)})`);
    t.equal(res.runningVersion, version, `${label}: running ${version}`);
    t.equal(res.migration, migration, `${label}: migration ${migration}`);
    t.not((await inspect()).Image, before, `${label}: on a new image`);
    t.equal(await health(), version);
    t.ok(
      res.evidence.checks.some((c) => c.name === 'image' && c.ok),
      `${label}: the image was loaded and checked by id`,
    );
    await checkConfig(label);
    if (typeof res.downtimeMs === 'number') downtimes[label] = res.downtimeMs;
  };

  releases.sign(archives['1.0.1'], '1.0.1');
  await good('patch', '1.0.1', 'none');

  // A bad build of the minor: it corrupts the data on start; the old image comes back on the restored data.
  {
    const before = (await inspect()).Image;
    const h0 = await height();
    releases.sign(archives['1.1.0-corrupts'], '1.1.0');
    const { code, res } = await cli(upgrade('1.1.0'));
    t.equal(code, 3, `bad build: exit 3 (${res.code}: ${res.message})`);
    t.equal(res.outcome, 'rolled_back', 'bad build: rolled back');
    t.same(res.rollback, { mode: 'binary+data', ok: true }, 'bad build: image and data rolled back');
    t.equal((await inspect()).Image, before, 'bad build: back on the previous image id');
    t.equal(await health(), '1.0.1', 'bad build: healthy on 1.0.1');
    t.ok((await height()) >= h0, `bad build: data intact (height ${await height()} >= ${h0})`);
    await checkConfig('bad build rollback');
  }

  releases.sign(archives['1.1.0'], '1.1.0');
  await good('minor', '1.1.0', 'automatic');

  // kill -9 after the old container is removed and before the new one exists: only the journal holds its configuration.
  releases.sign(archives['2.0.0'], '2.0.0', { pathKind: 'major' });
  {
    await pauseAndKill(spawnCli, path.join(dir, 'paused'), 'container-removed', upgrade('2.0.0'));
    t.equal((await lab.docker.listContainers({ all: true, filters: { name: ['guts-node'] } })).length, 0, 'crash: no container at all');
    const { res } = await cli(['recover', '--json']);
    t.equal(res.outcome, 'rolled_back', 'crash: recovered by a rollback');
    t.equal(res.code, 'E_INTERRUPTED', 'crash: E_INTERRUPTED');
    t.equal(await health(), '1.1.0', 'crash: healthy on 1.1.0 again');
    await checkConfig('crash recovery');
  }

  await good('major', '2.0.0', 'manual');

  // The rollback command: the previous image, and the data from before the major's migration.
  {
    const { code, res } = await cli(['rollback', '--json']);
    t.equal(code, 0, `rollback command: exit 0 (${res.message ?? ''})`);
    t.same(res.rollback, { mode: 'binary+data', ok: true }, 'rollback command: image and data');
    t.equal(await health(), '1.1.0', 'rollback command: back on 1.1.0');
    await checkConfig('rollback command');
  }
  // An online backup and its restore on a container host: the data comes back, the container's image stays.
  {
    const image = (await inspect()).Image;
    const out = await new Promise<string>((resolve) => {
      const c = spawnCli(['backup', 'create', '--json']);
      let stdout = '';
      c.stdout!.on('data', (d: Buffer) => {
        stdout += d.toString();
      });
      c.stderr!.resume();
      c.on('close', () => resolve(stdout));
    });
    const row = JSON.parse(out) as { id: string; version: string | null; meta: { binary?: unknown } };
    t.equal(row.version, '1.1.0', 'backup create: the version is the image the container runs');
    t.notOk(row.meta.binary, 'backup create: no binary file on a container host');
    const restored = await new Promise<number | null>((resolve) => {
      const c = spawnCli(['backup', 'restore', row.id]);
      c.stdout!.resume();
      c.stderr!.resume();
      c.on('close', resolve);
    });
    t.equal(restored, 0, 'backup restore: exit 0');
    t.equal((await inspect()).Image, image, 'backup restore: the container keeps its image');
    t.equal(await health(), '1.1.0', 'backup restore: healthy on 1.1.0');
  }

  // doctor reads what is installed from the container's image, and points at the container's log.
  {
    const out = await new Promise<string>((resolve) => {
      const c = spawnCli(['doctor', '--json']);
      let stdout = '';
      c.stdout!.on('data', (d: Buffer) => {
        stdout += d.toString();
      });
      c.stderr!.resume();
      c.on('close', () => resolve(stdout));
    });
    const findings = (JSON.parse(out) as { findings: { check: string; verdict: string; detail: string; next: string[] }[] }).findings;
    const by = Object.fromEntries(findings.map((f) => [f.check, f]));
    t.equal(by.binary?.verdict, 'ok', `doctor: ${by.binary?.detail}`);
    t.match(by.binary?.detail, /^image sha256:[0-9a-f]{64} is guts-node 1\.1\.0$/, 'doctor: the installed release is the image');
    t.equal(by.health?.verdict, 'ok', `doctor health: ${by.health?.detail}`);
  }
  t.comment(`downtime (stop -> ready) under the docker driver: ${JSON.stringify(downtimes)} ms`);
});
