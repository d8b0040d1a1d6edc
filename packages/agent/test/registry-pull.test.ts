/**
 * Releases pulled by digest from a real registry (Debian's docker-registry,
 * distribution v2, on a loopback port with its own storage) into a real
 * dockerd: a docker host upgraded from it; a tag in signed metadata refused
 * before any pull; a digest the registry does not hold refused with the
 * container untouched; an image the engine already holds reused with the
 * registry stopped; a compose host upgraded from it without its operator's
 * file changing. And an image release refused on a process host.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import YAML from 'yaml';
import { createCluster, createReleaseSigner, startArtifactServer, waitFor, type NodeDescriptor } from '@guts-upgrade/simulator';
import { childEnv, CLI, collectResult, FAST_TIMINGS, makeRig, parseResult, sha, TEST_CHECKS } from './helpers.js';
import { composeBinary, composeSkipReason, imageTag, registrySkipReason, startDockerLab, startRegistry } from './docker-lab.js';
import { Repo } from './release-fixture.js';

const skip = registrySkipReason() ?? composeSkipReason();

t.test('docker and compose hosts pull releases by digest from a registry', { skip: skip ?? false }, async (t) => {
  const lab = await startDockerLab(t);
  const dir = path.join(lab.dir, 'rig');
  const artifacts = path.join(dir, 'artifacts');
  fs.mkdirSync(artifacts, { recursive: true });
  const registry = await startRegistry(t, path.join(lab.dir, 'registry'));
  const server = await startArtifactServer({ dir: artifacts });
  t.teardown(() => server.close());
  const releases = createReleaseSigner(path.join(artifacts, 'release'));
  const base = await lab.image('1.0.0');

  const children = new Set<ChildProcess>();
  t.teardown(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });
  /** An agent config for one host; returns its CLI. */
  const agent = (name: string, node: NodeDescriptor, service: Record<string, unknown>) => {
    const configPath = path.join(dir, `${name}.yaml`);
    fs.writeFileSync(
      configPath,
      YAML.stringify({
        nodeId: name,
        service: { ...service, dockerSocket: lab.socket, stopTimeoutMs: 5000 },
        node: { dataDir: node.dataDir, config: node.configPath, apiUrl: node.apiUrl, metricsUrl: node.metricsUrl },
        stateDir: path.join(dir, `${name}-state`),
        release: { repository: `${server.url}/release`, root: releases.root },
        fetch: { retries: 1, backoffMs: 50, timeoutMs: 30_000 },
        checks: { ...TEST_CHECKS, readyTimeoutMs: 20_000, stabilizeMs: 1000, commandTimeoutMs: 60_000 },
        diskMarginBytes: 0,
      }),
    );
    return (args: string[]) => {
      const c = spawn(process.execPath, [CLI, ...args, '--config', configPath], { env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
      children.add(c);
      return collectResult(c);
    };
  };
  const health = async (node: NodeDescriptor) => ((await (await fetch(`${node.apiUrl}/health`)).json()) as { version?: string }).version;
  const ready = (node: NodeDescriptor, what: string) =>
    waitFor(async () => (await fetch(`${node.apiUrl}/health/ready`).catch(() => null))?.status === 200, { what, timeoutMs: 30_000 });
  const imageIds = async () => (await lab.docker.listImages({ all: true })).map((i) => i.Id).sort();
  const imageCheck = (res: { evidence: { checks: { name: string; ok: boolean; detail?: string }[] } }) =>
    res.evidence.checks.find((c) => c.name === 'image' && c.ok)?.detail ?? '';

  // ---- the docker host: the operator's container on 1.0.0, host network, the node's files bind-mounted.
  const dockerCluster = path.join(dir, 'docker-cluster');
  const [dnode] = await createCluster({ n: 1, dir: dockerCluster, timings: FAST_TIMINGS, dataSizeMb: 1, dataVersion: '1.0.0' });
  const created = await lab.docker.createContainer({
    name: 'guts-node',
    Image: base.tag,
    Cmd: ['--config', dnode!.configPath],
    HostConfig: { NetworkMode: 'host', Binds: [`${dockerCluster}:${dockerCluster}`] },
  });
  await created.start();
  await ready(dnode!, 'docker node ready');
  const dcli = agent('d0', dnode!, { driver: 'docker', container: 'guts-node' });
  const container = () => lab.docker.getContainer('guts-node').inspect();

  // (a) A patch upgrade pulled by digest: the engine does not hold the image until the agent pulls it.
  const ref101 = await lab.push(registry.host, '1.0.1');
  await t.rejects(lab.docker.getImage(ref101).inspect(), 'the 1.0.1 image is only in the registry');
  releases.signImage(ref101, '1.0.1');
  {
    const { code, res, stderr } = await dcli(['upgrade', '--to', '1.0.1', '--json']);
    t.equal(code, 0, `pull: exit 0 (${res.code ?? ''} ${res.message ?? ''} ${code === 0 ? '' : stderr.slice(-600)})`);
    t.equal(res.runningVersion, '1.0.1', 'pull: running 1.0.1');
    t.equal(await health(dnode!), '1.0.1', 'pull: healthy on 1.0.1');
    t.match(imageCheck(res), /^pulled /, 'pull: the image was pulled');
    const pulled = await lab.docker.getImage(ref101).inspect();
    t.ok(pulled.RepoDigests.includes(ref101), 'pull: the engine lists the signed digest');
    t.equal((await container()).Image, pulled.Id, 'pull: the container runs the pulled image');
    t.ok(
      res.evidence.checks.some((c) => c.name === 'artifact-version' && c.ok),
      'pull: --version was checked in the pulled image',
    );
  }

  // (b) A tag in signed metadata (a release signed by some other tool): refused before anything is pulled.
  {
    const tagged = `${registry.host}/guts-node:1.0.2`;
    await lab.push(registry.host, '1.0.2'); // the tag exists in the registry: a pull would succeed
    releases.signImage(ref101, '1.0.2');
    const repo = new Repo(path.join(artifacts, 'release'));
    const targets = repo.read('targets');
    targets.signed.version += 1;
    const entry = (targets.signed.targets as Record<string, { custom: Record<string, unknown> }>)['guts-node/1.0.2/guts-node']!;
    entry.custom.image = tagged;
    const forged = repo.onlineResign(Repo.sign(targets, repo.keys('targets')), targets.signed.version);
    for (const [name, bytes] of Object.entries(forged)) fs.writeFileSync(repo.metaPath(name), bytes);
    const before = { image: (await container()).Image, images: await imageIds() };
    const { code, res } = await dcli(['upgrade', '--to', '1.0.2', '--json']);
    t.not(code, 0, 'tag: refused');
    t.equal(res.code, 'E_RELEASE_INVALID', `tag: E_RELEASE_INVALID (${res.message})`);
    t.match(res.message, /names no digest/, 'tag: the reason');
    t.same(await imageIds(), before.images, 'tag: nothing pulled');
    t.equal((await container()).Image, before.image, 'tag: the container is unchanged');
    t.equal(await health(dnode!), '1.0.1', 'tag: still healthy on 1.0.1');
  }

  // (c) A digest the registry does not hold: E_IMAGE_PULL, the container untouched.
  {
    const missing = `${registry.host}/guts-node@sha256:${crypto.createHash('sha256').update('no such manifest').digest('hex')}`;
    releases.signImage(missing, '1.0.2');
    const before = (await container()).Image;
    const { code, res } = await dcli(['upgrade', '--to', '1.0.2', '--json']);
    t.not(code, 0, 'unknown digest: refused');
    t.equal(res.code, 'E_IMAGE_PULL', `unknown digest: E_IMAGE_PULL (${res.message})`);
    t.equal((await container()).Image, before, 'unknown digest: the container is unchanged');
    t.ok((await container()).State.Running, 'unknown digest: still running');
    t.equal(await health(dnode!), '1.0.1', 'unknown digest: still healthy on 1.0.1');
  }

  // (d) The image already in the engine under its digest: the upgrade needs no registry.
  {
    const ref102 = await lab.push(registry.host, '1.0.2', { keep: true });
    releases.signImage(ref102, '1.0.2');
    await registry.stop();
    const { code, res, stderr } = await dcli(['upgrade', '--to', '1.0.2', '--json']);
    t.equal(code, 0, `present: exit 0 (${res.code ?? ''} ${res.message ?? ''} ${code === 0 ? '' : stderr.slice(-600)})`);
    t.match(imageCheck(res), /already in the engine/, 'present: not pulled again');
    t.equal(await health(dnode!), '1.0.2', 'present: healthy on 1.0.2 with the registry stopped');
    await registry.start();
  }

  // (e) A compose host upgraded from the registry; the operator's file never changes.
  {
    const composeCluster = path.join(dir, 'compose-cluster');
    const [cnode] = await createCluster({ n: 1, dir: composeCluster, timings: FAST_TIMINGS, dataSizeMb: 1, dataVersion: '1.0.0' });
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
            command: ['--config', cnode!.configPath],
            volumes: [`${composeCluster}:${composeCluster}`],
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
    t.equal(await compose(['up', '-d']), 0, 'compose: the operator brings the service up');
    await ready(cnode!, 'compose node ready');
    const ccli = agent('c0', cnode!, { driver: 'compose', file: composeFile, service: 'guts-node' });
    // A build the engine has not seen: this upgrade pulls.
    const ref103 = await lab.push(registry.host, '1.0.3');
    releases.signImage(ref103, '1.0.3');
    const { code, res, stderr } = await ccli(['upgrade', '--to', '1.0.3', '--json']);
    t.equal(code, 0, `compose: exit 0 (${res.code ?? ''} ${res.message ?? ''} ${code === 0 ? '' : stderr.slice(-600)})`);
    t.match(imageCheck(res), /^pulled /, 'compose: the image was pulled');
    t.equal(await health(cnode!), '1.0.3', 'compose: healthy on 1.0.3');
    const pulled = await lab.docker.getImage(ref103).inspect();
    const [svc] = await lab.docker.listContainers({ all: true, filters: { label: ['com.docker.compose.service=guts-node'] } });
    t.equal(svc?.ImageID, pulled.Id, 'compose: the service runs the pulled image');
    const override = fs.readFileSync(path.join(dir, 'c0-state', 'compose', 'override.yml'), 'utf8');
    t.match(override, /image: guts-upgrade\/guts-node:1\.0\.3-[0-9a-f]{12}/, 'compose: the override pins the pulled image');
    t.equal(sha(composeFile), operatorSha, "compose: the operator's file is byte-identical");
    t.equal(await compose(['-f', path.join(dir, 'c0-state', 'compose', 'override.yml'), 'down']), 0, 'compose: down');
  }
});

t.test('an image release is refused on a process host', async (t) => {
  const rig = await makeRig(t);
  await rig.startNode();
  const ref = `127.0.0.1:5000/guts-node@sha256:${'5e'.repeat(32)}`;
  rig.releases.signImage(ref, '1.0.1');
  const before = sha(rig.binary);
  const r = await rig.cli(['upgrade', '--to', '1.0.1', '--json']);
  const res = parseResult(r.stdout);
  t.not(r.code, 0, 'refused');
  t.equal(res.code, 'E_ARTIFACT_INVALID', `E_ARTIFACT_INVALID (${res.message})`);
  t.match(res.message, /process driver runs a binary/);
  t.equal(sha(rig.binary), before, 'the binary is unchanged');
  t.equal(await rig.healthVersion(), '1.0.0', 'still healthy on 1.0.0');
});
