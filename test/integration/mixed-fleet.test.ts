/**
 * One rolling rollout over a mixed fleet (issue 16, item 5): four validators of
 * one simulated network, v0 and v1 run as processes by the process driver, v2
 * in a docker container and v3 in a Compose service, on a private dockerd
 * (packages/agent/test/docker-lab.ts). They reach each other because every
 * container uses the host network: all four nodes listen on 127.0.0.1, each on
 * the ports of its own config, exactly as the process nodes do. v2 and v3 start
 * as processes (the fleet's unmanaged validators), are stopped and come back in
 * their container on the same config and data dir (bind-mounted at the same
 * paths), and get an agent each. The coordinator sends one version to all four;
 * each agent resolves it in its own release repository: a binary for the
 * process hosts, a signed image archive for the container hosts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import t from 'tap';
import { stringify } from 'yaml';
import { api } from '@guts-upgrade/coordinator';
import type { FleetBody, NodeRegisteredBody, RolloutDetailBody } from '@guts-upgrade/coordinator';
import { composeSkipReason, imageTag, startComposeProject, startDockerLab } from '@guts-upgrade/agent/test/docker-lab';
import { createReleaseSigner, startArtifactServer, waitFor } from '@guts-upgrade/simulator';
import { auditRollout, livenessDuringUpgrades, makeRig } from './harness.js';

function agentCli(): string {
  const manifest = createRequire(import.meta.url).resolve('@guts-upgrade/agent/package.json');
  const pkg = JSON.parse(readFileSync(manifest, 'utf8')) as { bin: Record<string, string> };
  return join(dirname(manifest), pkg.bin['guts-upgrade-agent']!);
}

const skip = composeSkipReason();

t.test('a rolling rollout over process, docker and compose hosts in one network', { skip: skip ?? false }, async (t) => {
  const lab = await startDockerLab(t);
  const rig = await makeRig(t, { n: 2, chain: { unmanaged: 2 } });
  const [v2, v3] = rig.fleet.unmanaged as [(typeof rig.fleet.unmanaged)[number], (typeof rig.fleet.unmanaged)[number]];
  await lab.image('1.0.0');

  // The container hosts' release repository: image archives signed as the versions they carry.
  const releasesDir = join(lab.dir, 'releases');
  mkdirSync(releasesDir, { recursive: true });
  const archive = await lab.archive(releasesDir, '1.1.0');
  const server = await startArtifactServer({ dir: releasesDir });
  t.teardown(() => server.close());
  const releases = createReleaseSigner(join(releasesDir, 'release'));
  releases.sign(archive, '1.1.0');

  // v2: the operator's container; v3: the operator's Compose service. Same config, data and ports as their processes had.
  await rig.fleet.stopNode(v2);
  await rig.fleet.stopNode(v3);
  const c2 = await lab.docker.createContainer({
    name: 'guts-node-v2',
    Image: imageTag('1.0.0'),
    Cmd: ['--config', v2.configPath],
    HostConfig: { NetworkMode: 'host', Binds: [`${v2.dir}:${v2.dir}`], RestartPolicy: { Name: 'unless-stopped', MaximumRetryCount: 0 } },
  });
  await c2.start();
  const { file: composeFile } = await startComposeProject(t, lab, {
    dir: join(lab.dir, 'guts-v3'),
    image: imageTag('1.0.0'),
    configPath: v3.configPath,
    mount: v3.dir,
  });
  for (const n of [v2, v3])
    await waitFor(async () => (await fetch(`${n.apiUrl}/health/ready`).catch(() => null))?.status === 200, {
      what: `${n.name} ready in its container`,
      timeoutMs: 60_000,
    });

  // Their agents, registered and bound to their validators like any host's.
  const agents: ChildProcess[] = [];
  t.teardown(() => {
    for (const a of agents) if (a.exitCode === null && a.signalCode === null) a.kill('SIGKILL');
  });
  const services = {
    v2: { driver: 'docker', container: 'guts-node-v2', dockerSocket: lab.socket, stopTimeoutMs: 5000 },
    v3: { driver: 'compose', file: composeFile, service: 'guts-node', dockerSocket: lab.socket, stopTimeoutMs: 5000 },
  };
  for (const n of [v2, v3]) {
    const id = n.name as 'v2' | 'v3';
    const { token } = await api<NodeRegisteredBody>(rig.op, 'POST', '/api/v1/nodes', { id, pubkey: n.pubkey });
    const stateDir = join(lab.dir, `agent-${id}`);
    mkdirSync(stateDir, { recursive: true });
    const config = join(stateDir, 'agent.yaml');
    writeFileSync(
      config,
      stringify({
        nodeId: id,
        validatorPubkey: n.pubkey,
        coordinator: { url: rig.url.replace('http', 'ws'), token, reconnectMaxMs: 500 },
        service: services[id],
        node: { dataDir: n.dataDir, config: n.configPath, apiUrl: n.apiUrl, metricsUrl: n.metricsUrl },
        stateDir,
        backup: { retention: 1 },
        release: { repository: `${server.url}/release`, root: releases.root },
        fetch: { retries: 3, backoffMs: 50, timeoutMs: 30_000 },
        checks: {
          readyTimeoutMs: 30_000,
          versionTimeoutMs: 20_000,
          consensusTimeoutMs: 20_000,
          peersTimeoutMs: 20_000,
          advanceTimeoutMs: 30_000,
          syncTimeoutMs: 30_000,
          advanceWindowMs: 1500,
          stabilizeMs: 500,
          httpTimeoutMs: 3000,
          commandTimeoutMs: 60_000,
        },
        diskMarginBytes: 0,
        logLevel: 'warn',
      }),
    );
    const out = openSync(join(stateDir, 'agent.log'), 'a');
    agents.push(spawn(process.execPath, [agentCli(), 'run', '--config', config], { stdio: ['ignore', out, out] }));
    closeSync(out);
  }
  await waitFor(
    async () => {
      const f = await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet');
      return f.nodes.length === 4 && f.down.length === 0 && f.nodes.every((n) => n.connected && n.version === '1.0.0') && f.leader;
    },
    { what: 'four hosts connected, their nodes healthy on 1.0.0', timeoutMs: 90_000, intervalMs: 250 },
  );

  // One version for all: the process hosts' repository signs the binary, the container hosts' the image (above).
  rig.fleet.artifact('1.1.0');
  const r = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', {
    target: { version: '1.1.0' },
    strategy: 'rolling',
    options: { maxUnavailable: 1 },
  });
  const d = await rig.waitRollout(r.rollout.id);
  t.equal(d.rollout.state, 'completed', `the rollout completed (${d.rollout.code ?? ''} ${d.rollout.reason ?? ''})`);
  const f = await api<FleetBody>(rig.op, 'GET', '/api/v1/fleet');
  t.same(
    f.nodes.map((n) => [n.id, n.version]).sort(),
    [
      ['v0', '1.1.0'],
      ['v1', '1.1.0'],
      ['v2', '1.1.0'],
      ['v3', '1.1.0'],
    ],
    'every host runs 1.1.0',
  );
  // The agents load the archive and pin the image by id; the archive restores its tag too.
  const target = (await lab.docker.getImage(imageTag('1.1.0')).inspect()).Id;
  t.equal((await lab.docker.getContainer('guts-node-v2').inspect()).Image, target, 'v2: its container recreated on the 1.1.0 image');
  const composed = await lab.docker.listContainers({ filters: { label: ['com.docker.compose.service=guts-node'] } });
  t.same(
    composed.map((c) => c.ImageID),
    [target],
    'v3: the Compose service runs the 1.1.0 image',
  );
  const audit = await auditRollout(rig, r.rollout.id, 4);
  t.equal(audit.maxInFlight, 1, 'one host at a time (f = 1)');
  t.same(audit.leaderViolations, [], 'the leader last');
  const live = await livenessDuringUpgrades(rig, r.rollout.id);
  t.same(live.stalled, [], `the chain kept finalizing through all ${live.windows} upgrades`);
  const downtimes = d.steps.map((s) => `${s.nodeId} ${s.downtimeMs ?? '?'} ms`).join(', ');
  t.comment(`per-node downtime: ${downtimes}`);
});
