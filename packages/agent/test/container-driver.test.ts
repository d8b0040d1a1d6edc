/**
 * The container drivers' decisions as pure functions (no engine needed), and
 * their footprint: a systemd or process host never loads dockerode (issue 17).
 * docker-driver.test.ts and compose-driver.test.ts run them on a real dockerd.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type Docker from 'dockerode';
import * as tar from 'tar';
import t from 'tap';
import { defaultProject, releaseTag } from '../src/service/compose.js';
import { overrideText } from '../src/service/compose-override.js';
import { archiveImageId, hostUserOf, mapToContainer, specFromInspect } from '../src/service/engine.js';
import { childEnv } from './helpers.js';

const HEX = 'a'.repeat(64);

t.test('an image archive names exactly one image id, else E_ARTIFACT_INVALID', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'guts-archive-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const archive = async (name: string, manifest: unknown) => {
    const src = path.join(dir, `${name}-src`);
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'manifest.json'), JSON.stringify(manifest));
    const file = path.join(dir, `${name}.tar`);
    await tar.c({ file, cwd: src }, ['manifest.json']);
    return file;
  };
  t.equal(await archiveImageId(await archive('legacy', [{ Config: `${HEX}.json`, RepoTags: null, Layers: [] }])), `sha256:${HEX}`, 'docker save');
  t.equal(await archiveImageId(await archive('oci', [{ Config: `blobs/sha256/${HEX}`, Layers: [] }])), `sha256:${HEX}`, 'OCI layout');
  await t.rejects(archiveImageId(await archive('two', [{ Config: `${HEX}.json` }, { Config: `${HEX}.json` }])), {
    code: 'E_ARTIFACT_INVALID',
    message: /exactly one image/,
  });
  const binary = path.join(dir, 'guts-node');
  fs.writeFileSync(binary, '#!/bin/sh\necho guts-node 1.1.0\n');
  await t.rejects(archiveImageId(binary), { code: 'E_ARTIFACT_INVALID' }, 'a bare binary is not an image archive');
});

t.test('a container is recreated with what it set beyond its image', async (t) => {
  const host = { NetworkMode: 'host', Binds: ['/srv/guts:/srv/guts'], RestartPolicy: { Name: 'unless-stopped', MaximumRetryCount: 0 } };
  const info = {
    Name: '/guts-node',
    Config: {
      Env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'GUTS_LOG_LEVEL=debug'],
      Cmd: ['--config', '/srv/guts/config.yaml'],
      Entrypoint: ['/usr/local/bin/guts-node'],
      User: '',
      WorkingDir: '',
      Labels: { 'example.owner': 'ops', 'org.image': 'x' },
      Tty: false,
      OpenStdin: false,
    },
    HostConfig: host,
  } as unknown as Docker.ContainerInspectInfo;
  const image = {
    Config: {
      Env: ['PATH=/usr/local/bin:/usr/bin:/bin'],
      Cmd: null,
      Entrypoint: ['/usr/local/bin/guts-node'],
      User: '',
      WorkingDir: '',
      Labels: { 'org.image': 'x' },
    },
  } as unknown as Docker.ImageInspectInfo;
  const spec = specFromInspect(info, image);
  t.same(spec.HostConfig, host, 'ports, binds, restart policy and network mode: the host config whole');
  t.same(spec.Env, ['GUTS_LOG_LEVEL=debug'], "the image's own env is the new image's to give");
  t.same(spec.Cmd, ['--config', '/srv/guts/config.yaml'], 'command kept');
  t.notOk('Entrypoint' in spec, "the image's entrypoint is not pinned");
  t.same(spec.Labels, { 'example.owner': 'ops' }, "the operator's labels kept, the image's left to it");
  t.equal(spec.name, 'guts-node');
});

t.test('paths, users, the override and the project as the drivers decide them', async (t) => {
  const mounts = [
    { Source: '/srv/guts', Destination: '/data' },
    { Source: '/srv/guts/config', Destination: '/etc/guts' },
  ];
  t.equal(mapToContainer('/srv/guts/data', mounts), '/data/data');
  t.equal(mapToContainer('/srv/guts/config/config.yaml', mounts), '/etc/guts/config.yaml', 'the longest mount wins');
  t.equal(mapToContainer('/var/lib/other', mounts), '/var/lib/other', 'an unmounted path is the same inside');

  t.equal(hostUserOf(''), 'root', 'no user set: root');
  t.equal(hostUserOf('1000:1000'), '1000:1000', 'uid:gid is the same on the host');
  t.equal(hostUserOf('guts'), null, "a name from the image's passwd is not the host's");

  t.match(
    overrideText('guts-node', 'guts-upgrade/guts-node:1.1.0-abc', '2.4'),
    /version: "2\.4"\nservices:\n {2}guts-node:\n {4}image: guts-upgrade\/guts-node:1\.1\.0-abc/,
  );
  t.notMatch(overrideText('guts-node', 'x:1', null), /version/, 'no version when the operator gives none');
  t.equal(defaultProject('/srv/My Guts.d/docker-compose.yml'), 'mygutsd', "Compose v1's own normalisation of the directory name");
  t.equal(releaseTag('1.1.0', `sha256:${HEX}`), `guts-upgrade/guts-node:1.1.0-${HEX.slice(0, 12)}`);
});

t.test('dockerode is loaded only when a container driver is used', async (t) => {
  const dist = (p: string) => fileURLToPath(new URL(`../src/${p}`, import.meta.url));
  const script = `
    import { createRequire } from 'node:module';
    const require = createRequire(${JSON.stringify(dist('cli.js'))});
    const { createDriver } = await import(${JSON.stringify(dist('service/driver.js'))});
    const { resolveConfig } = await import(${JSON.stringify(dist('config.js'))});
    const loaded = () => Object.keys(require.cache).some((k) => k.includes('/node_modules/dockerode/'));
    await createDriver(resolveConfig({ nodeId: 'a', service: { driver: 'process' } }, {}, '/tmp')).isActive();
    const before = loaded();
    const d = createDriver(resolveConfig({ nodeId: 'a', service: { driver: 'docker', dockerSocket: '/nonexistent/docker.sock' } }, {}, '/tmp'));
    let code = null;
    try { await d.exists(); } catch (e) { code = e.code; }
    console.log(JSON.stringify({ before, after: loaded(), code }));
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: childEnv(), encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.same(
    JSON.parse(r.stdout.trim()),
    { before: false, after: true, code: 'E_DOCKER_ENGINE' },
    'process host: no dockerode; docker host: loaded, and a dead socket is E_DOCKER_ENGINE',
  );
});
