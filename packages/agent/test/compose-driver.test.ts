/**
 * The compose service driver against a real dockerd and Debian's Compose v1
 * CLI (docker-compose 1.29): a bad build rolled back, a good one upgraded,
 * then the rollback command, all without the operator's compose file
 * changing: the image is pinned in the agent's own override file, and
 * rollback puts the previous override back.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import YAML from 'yaml';
import { createCluster, createReleaseSigner, startArtifactServer, waitFor } from '@guts-upgrade/simulator';
import { childEnv, CLI, collectResult, FAST_TIMINGS, TEST_CHECKS, sha } from './helpers.js';
import { composeBinary, composeSkipReason, imageTag, startDockerLab } from './docker-lab.js';

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
  const archives = { bad: await lab.archive(artifacts, '1.0.1', 'exits'), good: await lab.archive(artifacts, '1.0.1') };
  const server = await startArtifactServer({ dir: artifacts });
  t.teardown(() => server.close());
  const releases = createReleaseSigner(path.join(artifacts, 'release'));

  // The operator's project: host network, the node's files bind-mounted at the same paths.
  const projectDir = path.join(dir, 'guts');
  fs.mkdirSync(projectDir);
  const composeFile = path.join(projectDir, 'docker-compose.yml');
  fs.writeFileSync(
    composeFile,
    YAML.stringify({
      version: '2.4',
      services: {
        'guts-node': {
          image: imageTag('1.0.0'),
          network_mode: 'host',
          restart: 'unless-stopped',
          command: ['--config', node!.configPath],
          volumes: [`${clusterDir}:${clusterDir}`],
          environment: { GUTS_TEST_MARK: 'kept' },
        },
      },
    }),
  );
  const operatorSha = sha(composeFile);
  const compose = (args: string[]) =>
    new Promise<number | null>((resolve) => {
      const c = spawn(composeBinary()!, ['-f', composeFile, ...args], {
        cwd: projectDir,
        env: { ...childEnv(), DOCKER_HOST: `unix://${lab.socket}` },
        stdio: 'ignore',
      });
      c.on('close', resolve);
    });
  t.equal(await compose(['up', '-d']), 0, 'the operator brings the service up');
  t.teardown(() => compose(['down']));
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
  const cli = (args: string[]) =>
    collectResult(spawn(process.execPath, [CLI, ...args, '--config', configPath], { env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] }));
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
    const ran = await new Promise<number | null>((resolve) => {
      const c = spawn(composeBinary()!, argv.slice(1), { cwd: os.tmpdir(), env: { ...childEnv(), DOCKER_HOST: `unix://${lab.socket}` }, stdio: 'ignore' });
      c.on('close', resolve);
    });
    t.equal(ran, 0, `the documented command exits 0: ${line}`);
    t.equal((await service())?.Id, info?.Id, 'the documented command leaves the container as it is');
    t.equal(await health(), '1.0.1', 'the documented command keeps the pinned release');
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
