/**
 * The compose service driver against a real dockerd and Debian's Compose v1
 * CLI (docker-compose 1.29): a bad build rolled back, a good one upgraded,
 * a kill -9 of the agent inside install recovered, then the rollback
 * command, all without the operator's compose file changing: the image is
 * pinned in the agent's own override file, and rollback puts the previous
 * override back.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import YAML from 'yaml';
import { createCluster, createReleaseSigner, startArtifactServer, waitFor } from '@guts-upgrade/simulator';
import { cliRunner, FAST_TIMINGS, pauseAndKill, TEST_CHECKS, sha } from './helpers.js';
import { composeRun, composeSkipReason, imageTag, startComposeProject, startDockerLab } from './docker-lab.js';

const skip = composeSkipReason();

/** The docker-compose line docs/operating.md shows (an indented code block). */
function documentedCompose(): string {
  const doc = fs.readFileSync(new URL('../../../../docs/operating.md', import.meta.url), 'utf8');
  const line = doc.split('\n').find((l) => l.startsWith('    docker-compose '));
  if (!line) throw new Error('docs/operating.md shows no docker-compose command');
  return line.trim();
}

t.test('compose driver: upgrade and rollback without touching the operator file', { skip: skip ?? false }, async (t) => {
  const lab = await startDockerLab(t);
  const dir = path.join(lab.dir, 'rig');
  const clusterDir = path.join(dir, 'cluster');
  const artifacts = path.join(dir, 'artifacts');
  fs.mkdirSync(artifacts, { recursive: true });
  const [node] = await createCluster({ n: 1, dir: clusterDir, timings: FAST_TIMINGS, dataSizeMb: 1, dataVersion: '1.0.0' });
  await lab.image('1.0.0');
  const archives = {
    bad: await lab.archive(artifacts, '1.0.1', 'exits'),
    good: await lab.archive(artifacts, '1.0.1'),
    minor: await lab.archive(artifacts, '1.1.0'),
  };
  const server = await startArtifactServer({ dir: artifacts });
  t.teardown(() => server.close());
  const releases = createReleaseSigner(path.join(artifacts, 'release'));

  // The operator's project: host network, the node's files bind-mounted at the same paths.
  const project = await startComposeProject(t, lab, {
    dir: path.join(dir, 'guts'),
    image: imageTag('1.0.0'),
    configPath: node!.configPath,
    mount: clusterDir,
    environment: { GUTS_TEST_MARK: 'kept' },
  });
  const composeFile = project.file;
  const operatorSha = sha(composeFile);
  await waitFor(async () => (await fetch(`${node!.apiUrl}/health/ready`).catch(() => null))?.status === 200, { what: 'compose node ready', timeoutMs: 30_000 });

  const stateDir = path.join(dir, 'state');
  const configPath = path.join(dir, 'agent.yaml');
  fs.writeFileSync(
    configPath,
    YAML.stringify({
      nodeId: 'c0',
      service: { driver: 'compose', file: composeFile, service: 'guts-node', dockerSocket: lab.socket, stopTimeoutMs: 5000 },
      node: { dataDir: node!.dataDir, config: node!.configPath, apiUrl: node!.apiUrl, metricsUrl: node!.metricsUrl },
      stateDir,
      release: { repository: `${server.url}/release`, root: releases.root },
      fetch: { retries: 3, backoffMs: 50, timeoutMs: 30_000 },
      // A container takes longer to come up than a process; recreating one is part of the command.
      checks: { ...TEST_CHECKS, readyTimeoutMs: 20_000, stabilizeMs: 1000, commandTimeoutMs: 60_000 },
      diskMarginBytes: 0,
    }),
  );
  const { cli, spawnCli } = cliRunner(t, configPath);
  const health = async () => ((await (await fetch(`${node!.apiUrl}/health`)).json()) as { version?: string }).version;
  const override = path.join(stateDir, 'compose', 'override.yml');
  const service = async () => {
    const [c] = await lab.docker.listContainers({ all: true, filters: { label: ['com.docker.compose.service=guts-node'] } });
    return c ? lab.docker.getContainer(c.Id).inspect() : null;
  };

  {
    releases.sign(archives.bad, '1.0.1');
    const { code, res } = await cli(['upgrade', '--to', '1.0.1', '--json']);
    t.equal(code, 3, `bad build: exit 3 (${res.code}: ${res.message})`);
    t.equal(res.outcome, 'rolled_back', 'bad build: rolled back');
    t.equal(await health(), '1.0.0', 'bad build: healthy on 1.0.0');
    t.notOk(fs.existsSync(override), 'bad build: the previous override (none) is back');
    t.equal(sha(composeFile), operatorSha, "bad build: the operator's file is byte-identical");
  }
  let downtimeMs: number | undefined;
  {
    releases.sign(archives.good, '1.0.1');
    const { code, res, stderr } = await cli(['upgrade', '--to', '1.0.1', '--json']);
    t.equal(code, 0, `upgrade: exit 0 (${res.code ?? ''} ${res.message ?? ''} ${code === 0 ? '' : stderr.slice(-600)})`);
    t.equal(await health(), '1.0.1', 'upgrade: running 1.0.1');
    t.match(
      fs.readFileSync(override, 'utf8'),
      /version: "?2\.4"?\n[\s\S]*image: guts-upgrade\/guts-node:1\.0\.1-[0-9a-f]{12}/,
      'upgrade: the override pins the release image',
    );
    t.equal(sha(composeFile), operatorSha, "upgrade: the operator's file is byte-identical");
    const info = await service();
    t.ok(info?.Config.Env.includes('GUTS_TEST_MARK=kept'), 'upgrade: the service keeps its environment');
    t.equal(info?.HostConfig.RestartPolicy?.Name, 'unless-stopped', 'upgrade: the service keeps its restart policy');
    downtimeMs = res.downtimeMs;

    // The command docs/operating.md gives operators, run as written (only the host's paths filled in):
    // with the agent's override, the pinned release stays, and the container is left as it is.
    const line = documentedCompose();
    const argv = line.replaceAll('/srv/guts/docker-compose.yml', composeFile).replaceAll('/var/lib/guts-upgrade', stateDir).split(/\s+/);
    const ran = await composeRun(lab, argv.slice(1), os.tmpdir());
    t.equal(ran, 0, `the documented command exits 0: ${line}`);
    t.equal((await service())?.Id, info?.Id, 'the documented command leaves the container as it is');
    t.equal(await health(), '1.0.1', 'the documented command keeps the pinned release');
  }
  // kill -9 inside install, then `recover` (state.ts: install -> roll-back): wherever the agent died,
  // the override that pinned 1.0.1 is back byte for byte and the service runs 1.0.1 again.
  {
    const pinned = fs.readFileSync(override, 'utf8');
    releases.sign(archives.minor, '1.1.0');
    for (const at of ['override-written', 'service-recreated']) {
      await pauseAndKill(spawnCli, path.join(dir, `paused-${at}`), at, ['upgrade', '--to', '1.1.0', '--json']);
      t.match(fs.readFileSync(override, 'utf8'), /image: guts-upgrade\/guts-node:1\.1\.0-/, `${at}: the agent died with 1.1.0 pinned`);
      if (at === 'service-recreated') t.match((await service())?.Config.Image, /:1\.1\.0-/, `${at}: the container was on 1.1.0`);
      const { code, res } = await cli(['recover', '--json']);
      t.equal(code, 3, `${at}: recover exit 3`);
      t.equal(res.outcome, 'rolled_back', `${at}: rolled back`);
      t.equal(res.code, 'E_INTERRUPTED', `${at}: E_INTERRUPTED`);
      t.equal(await health(), '1.0.1', `${at}: healthy on 1.0.1`);
      const info = await service();
      t.ok(info?.State.Running, `${at}: the service runs`);
      t.match(info?.Config.Image, /:1\.0\.1-/, `${at}: on the 1.0.1 image`);
      t.equal(fs.readFileSync(override, 'utf8'), pinned, `${at}: the previous override is back, byte for byte`);
      t.equal(sha(composeFile), operatorSha, `${at}: the operator's file is byte-identical`);
      const status = await cli(['status', '--json']);
      t.equal((status.res as unknown as { lock: unknown }).lock, null, `${at}: the journal lock is released`);
    }
  }
  {
    const { code, res } = await cli(['rollback', '--json']);
    t.equal(code, 0, `rollback: exit 0 (${res.message ?? ''})`);
    t.equal(await health(), '1.0.0', 'rollback: back on 1.0.0');
    t.notOk(fs.existsSync(override), 'rollback: the previous override (none) is back');
    t.equal(sha(composeFile), operatorSha, "rollback: the operator's file is byte-identical");
  }
  t.comment(`downtime (stop -> ready) under the compose driver: ${downtimeMs} ms`);
});
