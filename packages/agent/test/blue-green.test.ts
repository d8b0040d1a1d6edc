/**
 * Blue-green upgrades of a follower on a real dockerd (started here, removed
 * at the end) behind a real nginx (started here on loopback, its own config
 * and pid files in the lab dir): two validators run as simulator processes,
 * the follower in a container on the host network. A client loop sends about
 * 50 requests/s through the proxy from 10 s before the switch to 10 s after
 * and counts failures: zero is the property. A bad build (never ready) never
 * gets the traffic and its container is removed; a validator is refused.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import YAML from 'yaml';
import { waitFor } from '@guts-upgrade/simulator';
import { resolveConfig } from '../src/config.js';
import { renderUpstream } from '../src/blue-green/proxy.js';
import { cliRunner } from './helpers.js';
import { dockerSkipReason, startDockerLab } from './docker-lab.js';
import { clientLoop, NGINX, startBlueGreenLab } from './blue-green-lab.js';

const skip = dockerSkipReason() ?? (fs.existsSync(NGINX) ? null : 'no nginx: apt-get install nginx-light');

/** The documented example (docs/operating.md), checked as written. */
export const DOC_EXAMPLE = `
nodeId: f0
role: follower
service: { driver: docker, container: guts-node }
node: { dataDir: /srv/guts/data, config: /srv/guts/config.yaml, apiUrl: "http://127.0.0.1:8080" }
blueGreen:
  proxy:
    kind: nginx
    config: /etc/nginx/guts-upstream.conf
    reload: [nginx, -s, reload]
  slots:
    - { api: "127.0.0.1:18080", p2p: "127.0.0.1:19000", metrics: "127.0.0.1:19090" }
    - { api: "127.0.0.1:18081", p2p: "127.0.0.1:19001", metrics: "127.0.0.1:19091" }
  dataCopyDir: /srv/guts/blue-green
  drainMs: 2s
`;

t.test('blueGreen config: the documented example; refused for a validator and off docker', async (t) => {
  const doc = YAML.parse(DOC_EXAMPLE) as Record<string, unknown>;
  const c = resolveConfig(doc, {}, '/');
  t.equal(c.blueGreen?.proxy.kind, 'nginx');
  t.equal(c.blueGreen?.proxy.upstream, 'guts_api', 'upstream name defaults to guts_api');
  t.equal(c.blueGreen?.drainMs, 2000);
  t.throws(() => resolveConfig({ ...doc, role: 'validator' }, {}, '/'), { code: 'E_BLUE_GREEN_VALIDATOR' }, 'a validator with blueGreen is refused at load');
  const { role: _r, ...noRole } = doc;
  t.throws(() => resolveConfig(noRole, {}, '/'), { code: 'E_BLUE_GREEN_VALIDATOR' }, 'validator is the default role');
  t.throws(() => resolveConfig({ ...doc, service: { driver: 'systemd' } }, {}, '/'), { code: 'E_CONFIG', message: /needs service.driver docker/ });
  const bg = doc.blueGreen as Record<string, unknown>;
  const withBg = (o: Record<string, unknown>) => ({ ...doc, blueGreen: { ...bg, ...o } });
  t.throws(() => resolveConfig(withBg({ slots: [(bg.slots as unknown[])[0]] }), {}, '/'), { code: 'E_CONFIG', message: /exactly two slots/ });
  t.throws(() => resolveConfig(withBg({ slots: [(bg.slots as unknown[])[0], (bg.slots as unknown[])[0]] }), {}, '/'), { message: /must differ/ });
  t.throws(() => resolveConfig(withBg({ proxy: { kind: 'nginx', config: '/x' } }), {}, '/'), { message: /exactly one of reload/ });
  t.throws(() => resolveConfig(withBg({ proxy: { kind: 'traefik', config: '/x', reload: ['x'] } }), {}, '/'), { message: /nginx or haproxy/ });
  t.throws(() => resolveConfig(withBg({ dataCopyDir: undefined }), {}, '/'), { message: /dataCopyDir: is required/ });
  t.throws(() => resolveConfig(withBg({ extra: 1 }), {}, '/'), { message: /blueGreen.extra: is not a known key/ });
  const docs = fs.readFileSync(new URL('../../../../docs/operating.md', import.meta.url), 'utf8');
  t.ok(docs.includes(DOC_EXAMPLE.trim()), 'docs/operating.md shows this example as written');
  t.match(renderUpstream('haproxy', 'guts_api', '127.0.0.1:1'), /backend guts_api\n {4}server live 127\.0\.0\.1:1\n/);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test(
  'blue-green upgrade of a follower behind nginx: zero failed requests, a bad build never switched, a validator refused',
  { skip: skip ?? false },
  async (t) => {
    const t0 = Date.now();
    const lab = await startDockerLab(t);
    const base = await lab.image('1.0.0');
    const bg = await startBlueGreenLab(t, lab, { image: base.tag });
    const { dir, v0, f0, front, upstream, releases } = bg;
    const archives = {
      good: await lab.archive(bg.artifacts, '1.0.1'),
      bad: await lab.archive(bg.artifacts, '1.0.2', 'never-ready'),
      crash: await lab.archive(bg.artifacts, '1.0.3'),
    };
    const version = async () => ((await (await fetch(`${front}/health`)).json()) as { version?: string }).version;
    const configPath = path.join(dir, 'agent.yaml');
    const writeConfig = (extra: Record<string, unknown> = {}) => bg.writeConfig(configPath, extra);
    const { children, cli } = cliRunner(t, configPath);
    const names = bg.names;

    // A validator's key on a node configured as a follower: refused when the command runs, nothing touched.
    {
      writeConfig({ validatorPubkey: v0.pubkey });
      releases.sign(archives.good, '1.0.1');
      const { code, res } = await cli(['upgrade', '--to', '1.0.1', '--json']);
      t.not(code, 0, 'validator key: the upgrade fails');
      t.equal(res.code, 'E_BLUE_GREEN_VALIDATOR', `validator key: refused at command time (${res.message})`);
      t.same(await names(), ['guts-node'], 'validator key: no second container');
    }
    writeConfig();

    // The good build, with the client loop from 10 s before the switch to 10 s after it.
    const loop = clientLoop(front, '1.0.0', '1.0.1');
    const loopStart = Date.now();
    await sleep(8000); // the copy, start and checks before the switch take a few seconds more
    const up = await cli(['upgrade', '--to', '1.0.1', '--json']);
    t.equal(up.code, 0, `good build: exit 0 (${up.res.code ?? ''} ${up.res.message ?? ''} ${up.code === 0 ? '' : up.stderr.slice(-800)})`);
    await waitFor(() => loop.firstNew !== null, { what: 'the client sees the new version', timeoutMs: 30_000 }).catch(() => undefined);
    const before = loop.firstNew! - loopStart;
    await sleep(Math.max(0, loop.firstNew! + 10_000 - Date.now()));
    await loop.stop();
    const sw = up.res.evidence?.checks.find((c) => c.name === 'switch');
    t.comment(
      `blue-green switch: ${loop.total} requests through nginx, ${loop.failed} failed; switch (proxy rewrite + reload until the front served 1.0.1 five times) ${sw?.waitedMs} ms; ` +
        `client overlap: last 1.0.0 answer ${(loop.lastOld ?? 0) - (loop.firstNew ?? 0)} ms after the first 1.0.1 answer; downtime 0 ms`,
    );
    t.ok(before >= 10_000, `the loop ran ${before} ms before the switch`);
    t.ok(loop.total >= 700, `about 50 requests/s for 20 s and more (${loop.total})`);
    t.equal(loop.failed, 0, `zero failed requests during the switch (${loop.errors.join('; ')})`);
    t.equal(await version(), '1.0.1', 'the front serves the new version');
    t.same(await names(), ['guts-node'], 'one container left: the new one took the name, the old is gone');
    const now = await lab.docker.getContainer('guts-node').inspect();
    const good = await lab.docker
      .getImage('guts-node:1.0.1')
      .inspect()
      .catch(() => null);
    t.ok(now.State.Running, 'the new container runs');
    if (good) t.equal(now.Image, good.Id, 'on the new image');
    t.ok(now.Config.Env.includes(`GUTS_API_ADDR=${bg.otherApi}`), 'in the other slot');
    t.notOk(
      now.Mounts.some((m) => m.Source === f0.dataDir || f0.dataDir.startsWith(`${m.Source}/`)),
      `the old container's data volume was never mounted by the new (${now.Mounts.map((m) => m.Source).join(', ')})`,
    );
    t.match(fs.readFileSync(upstream, 'utf8'), `server ${bg.otherApi};`, 'the upstream file points at the new slot');

    // kill -9 after the switch, before the old container stops: recovery starts nothing new, points the proxy back, removes the new one.
    {
      releases.sign(archives.crash, '1.0.3');
      const marker = path.join(dir, 'paused');
      const loop3 = clientLoop(front, '1.0.1', '1.0.3');
      const run = cli(['upgrade', '--to', '1.0.3', '--json'], { GUTS_UPGRADE_TEST_PAUSE_AT: 'stop-blue', GUTS_UPGRADE_TEST_PAUSE_FILE: marker });
      await waitFor(() => fs.existsSync(marker), { what: 'agent paused after the switch', timeoutMs: 60_000 });
      t.equal(await version(), '1.0.3', 'crash: the proxy had switched to the new container');
      for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
      await run;
      const { res } = await cli(['recover', '--json']);
      await sleep(500);
      await loop3.stop();
      t.comment(`crash after the switch: ${loop3.total} requests through nginx, ${loop3.failed} failed; recovery ${res.outcome} ${res.code}`);
      t.equal(res.outcome, 'rolled_back', `crash: recovered by a rollback (${res.message})`);
      t.equal(res.code, 'E_INTERRUPTED', 'crash: E_INTERRUPTED');
      t.equal(loop3.failed, 0, `crash: zero failed requests through the switch and back (${loop3.errors.join('; ')})`);
      t.equal(await version(), '1.0.1', 'crash: the front serves 1.0.1 again');
      t.same(await names(), ['guts-node'], 'crash: the new container was removed');
      t.match(fs.readFileSync(upstream, 'utf8'), `server ${bg.otherApi};`, 'crash: the upstream file points at the old slot again');
    }

    // A bad build (never ready): no switch, the new container removed, the client loop sees nothing.
    releases.sign(archives.bad, '1.0.2');
    const loop2 = clientLoop(front, '1.0.1', '1.0.2');
    const bad = await cli(['upgrade', '--to', '1.0.2', '--json']);
    await sleep(1000);
    await loop2.stop();
    t.comment(`bad build: ${loop2.total} requests through nginx, ${loop2.failed} failed; result ${bad.res.outcome} ${bad.res.code}`);
    t.equal(bad.code, 3, `bad build: rolled back (exit 3: ${bad.res.code} ${bad.res.message})`);
    t.equal(bad.res.code, 'E_HEALTH_TIMEOUT', 'bad build: the new container never became ready');
    t.equal(loop2.failed, 0, `bad build: zero failed requests (${loop2.errors.join('; ')})`);
    t.equal(loop2.firstNew, null, 'bad build: never served');
    t.same(await names(), ['guts-node'], 'bad build: the new container was removed');
    t.equal(await version(), '1.0.1', 'bad build: the front still serves 1.0.1');
    t.match(fs.readFileSync(upstream, 'utf8'), `server ${bg.otherApi};`, 'bad build: the upstream file never changed');
    t.comment(`wall time ${Date.now() - t0} ms`);
  },
);
