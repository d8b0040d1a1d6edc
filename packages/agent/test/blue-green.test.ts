/**
 * Blue-green upgrades of a follower on a real dockerd (started here, removed
 * at the end) behind a real nginx (started here on loopback, its own config
 * and pid files in the lab dir): two validators run as simulator processes,
 * the follower in a container on the host network. A client loop sends about
 * 50 requests/s through the proxy from 10 s before the switch to 10 s after
 * and counts failures: zero is the property. A bad build (never ready) never
 * gets the traffic and its container is removed; a validator is refused.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import t from 'tap';
import YAML from 'yaml';
import {
  CLI_JS,
  createCluster,
  createReleaseSigner,
  freePorts,
  spawnNode,
  startArtifactServer,
  stopNode,
  waitFor,
  type SimChild,
} from '@guts-upgrade/simulator';
import { resolveConfig } from '../src/config.js';
import { renderUpstream } from '../src/blue-green/proxy.js';
import { childEnv, CLI, FAST_TIMINGS, parseResult, type CliResult } from './helpers.js';
import { dockerSkipReason, startDockerLab } from './docker-lab.js';

const NGINX = '/usr/sbin/nginx';
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

interface Loop {
  total: number;
  failed: number;
  errors: string[];
  /** Arrival time of the first answer from the new version, and of the last from the old. */
  firstNew: number | null;
  lastOld: number | null;
  stop(): Promise<void>;
}

/** ~50 requests/s through the proxy, each on a fresh connection (a reload closes idle keep-alive connections). */
function clientLoop(url: string, oldV: string, newV: string | null): Loop {
  const l: Loop = { total: 0, failed: 0, errors: [], firstNew: null, lastOld: null, stop: async () => undefined };
  const pending = new Set<Promise<void>>();
  const one = () =>
    new Promise<void>((resolve) => {
      l.total++;
      const fail = (why: string) => {
        l.failed++;
        if (l.errors.length < 10) l.errors.push(why);
        resolve();
      };
      const req = http.get(`${url}/health`, { agent: false, timeout: 5000 }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => {
          body += d.toString();
        });
        res.on('end', () => {
          if (res.statusCode !== 200) return fail(`HTTP ${res.statusCode}`);
          const v = (JSON.parse(body) as { version?: string }).version;
          if (v === newV) l.firstNew ??= Date.now();
          else if (v === oldV) l.lastOld = Date.now();
          resolve();
        });
        res.on('error', (e) => fail(e.message));
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (e) => fail(e.message));
    });
  const timer = setInterval(() => {
    const p = one();
    pending.add(p);
    void p.then(() => pending.delete(p));
  }, 20);
  // A failed assertion before stop() must not keep the test process alive.
  timer.unref();
  l.stop = async () => {
    clearInterval(timer);
    await Promise.all([...pending]);
  };
  return l;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test(
  'blue-green upgrade of a follower behind nginx: zero failed requests, a bad build never switched, a validator refused',
  { skip: skip ?? false },
  async (t) => {
    const t0 = Date.now();
    const lab = await startDockerLab(t);
    const dir = path.join(lab.dir, 'rig');
    const clusterDir = path.join(dir, 'cluster');
    const artifacts = path.join(dir, 'artifacts');
    fs.mkdirSync(artifacts, { recursive: true });
    const nodes = await createCluster({ n: 2, followers: ['f0'], dir: clusterDir, timings: FAST_TIMINGS, dataSizeMb: 1 });
    const [v0, v1, f0] = nodes as [(typeof nodes)[0], (typeof nodes)[0], (typeof nodes)[0]];
    const kids: SimChild[] = [];
    t.teardown(async () => {
      await Promise.all(kids.map((k) => stopNode(k)));
    });
    for (const v of [v0, v1]) kids.push(spawnNode(CLI_JS, v.configPath));

    const base = await lab.image('1.0.0');
    const archives = {
      good: await lab.archive(artifacts, '1.0.1'),
      bad: await lab.archive(artifacts, '1.0.2', 'never-ready'),
      crash: await lab.archive(artifacts, '1.0.3'),
    };
    const server = await startArtifactServer({ dir: artifacts });
    t.teardown(() => server.close());
    const releases = createReleaseSigner(path.join(artifacts, 'release'));

    // The follower's container: host network; config and data dir bound apart (the data dir is its own mount).
    await (
      await lab.docker.createContainer({
        name: 'guts-node',
        Image: base.tag,
        Cmd: ['--config', f0.configPath],
        HostConfig: { NetworkMode: 'host', Binds: [`${f0.configPath}:${f0.configPath}:ro`, `${f0.dataDir}:${f0.dataDir}`] },
      })
    ).start();

    // nginx on loopback, from a config of its own; the agent owns only upstream.conf.
    const nx = path.join(dir, 'nginx');
    fs.mkdirSync(path.join(nx, 'tmp'), { recursive: true });
    const [proxyPort, api1, p2p1, met1] = await freePorts(4);
    const upstream = path.join(nx, 'upstream.conf');
    fs.writeFileSync(upstream, renderUpstream('nginx', 'guts_api', f0.apiAddr));
    const conf = path.join(nx, 'nginx.conf');
    const tmp = path.join(nx, 'tmp');
    fs.writeFileSync(
      conf,
      `pid ${nx}/nginx.pid;\nerror_log ${nx}/error.log;\nworker_processes 1;\nevents { worker_connections 512; }\nhttp {\n  access_log off;\n` +
        `  client_body_temp_path ${tmp}/body; proxy_temp_path ${tmp}/proxy; fastcgi_temp_path ${tmp}/fcgi; uwsgi_temp_path ${tmp}/uwsgi; scgi_temp_path ${tmp}/scgi;\n` +
        `  include ${upstream};\n  server { listen 127.0.0.1:${proxyPort}; location / { proxy_pass http://guts_api; } }\n}\n`,
    );
    const nginxArgv = ['-p', nx, '-c', conf, '-e', path.join(nx, 'error.log')];
    execFileSync(NGINX, nginxArgv);
    t.teardown(async () => {
      const pid = Number(fs.readFileSync(path.join(nx, 'nginx.pid'), 'utf8').trim());
      try {
        process.kill(pid, 'SIGQUIT');
      } catch {
        return;
      }
      await waitFor(() => !fs.existsSync(path.join(nx, 'nginx.pid')), { what: 'nginx gone', timeoutMs: 10_000 }).catch(() => process.kill(pid, 'SIGKILL'));
    });
    const front = `http://127.0.0.1:${proxyPort}`;
    const version = async () => ((await (await fetch(`${front}/health`)).json()) as { version?: string }).version;
    await waitFor(async () => (await fetch(`${front}/health/ready`).catch(() => null))?.status === 200, {
      what: 'follower ready behind nginx',
      timeoutMs: 30_000,
    });

    const configPath = path.join(dir, 'agent.yaml');
    const agentConfig = (extra: Record<string, unknown> = {}) => ({
      nodeId: 'f0',
      role: 'follower',
      service: { driver: 'docker', container: 'guts-node', dockerSocket: lab.socket, stopTimeoutMs: 5000 },
      node: { dataDir: f0.dataDir, config: f0.configPath, apiUrl: front, metricsUrl: null },
      stateDir: path.join(dir, 'state'),
      release: { repository: `${server.url}/release`, root: releases.root },
      fetch: { retries: 3, backoffMs: 50, timeoutMs: 30_000 },
      checks: {
        readyTimeoutMs: 6000,
        versionTimeoutMs: 5000,
        syncTimeoutMs: 15_000,
        syncDistance: 3,
        pollMaxMs: 300,
        httpTimeoutMs: 2000,
        commandTimeoutMs: 60_000,
      },
      blueGreen: {
        proxy: { kind: 'nginx', config: upstream, reload: [NGINX, ...nginxArgv, '-s', 'reload'] },
        slots: [
          { api: f0.apiAddr, p2p: f0.p2pAddr, metrics: f0.metricsAddr },
          { api: `127.0.0.1:${api1}`, p2p: `127.0.0.1:${p2p1}`, metrics: `127.0.0.1:${met1}` },
        ],
        dataCopyDir: path.join(dir, 'blue-green'),
        env: { GUTS_SIM_HISTORY_FILE: '{slotDir}/history.jsonl' },
        drainMs: 1000,
      },
      diskMarginBytes: 0,
      ...extra,
    });
    const writeConfig = (extra: Record<string, unknown> = {}) => fs.writeFileSync(configPath, YAML.stringify(agentConfig(extra)));
    const children = new Set<ChildProcess>();
    t.teardown(() => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    });
    const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
      new Promise<{ code: number | null; res: CliResult; stderr: string }>((resolve) => {
        const c = spawn(process.execPath, [CLI, ...args, '--config', configPath], { env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
        children.add(c);
        let stdout = '';
        let stderr = '';
        c.stdout.on('data', (d: Buffer) => {
          stdout += d.toString();
        });
        c.stderr.on('data', (d: Buffer) => {
          stderr += d.toString();
        });
        c.on('close', (code) => resolve({ code, res: parseResult(stdout.includes('{') ? stdout : '{}'), stderr }));
      });
    const names = async () => (await lab.docker.listContainers({ all: true })).map((c) => c.Names[0]!.replace(/^\//, '')).sort();

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
    t.ok(now.Config.Env.includes(`GUTS_API_ADDR=127.0.0.1:${api1}`), 'in the other slot');
    t.notOk(
      now.Mounts.some((m) => m.Source === f0.dataDir || f0.dataDir.startsWith(`${m.Source}/`)),
      `the old container's data volume was never mounted by the new (${now.Mounts.map((m) => m.Source).join(', ')})`,
    );
    t.match(fs.readFileSync(upstream, 'utf8'), `server 127.0.0.1:${api1};`, 'the upstream file points at the new slot');

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
      t.match(fs.readFileSync(upstream, 'utf8'), `server 127.0.0.1:${api1};`, 'crash: the upstream file points at the old slot again');
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
    t.match(fs.readFileSync(upstream, 'utf8'), `server 127.0.0.1:${api1};`, 'bad build: the upstream file never changed');
    t.comment(`wall time ${Date.now() - t0} ms`);
  },
);
