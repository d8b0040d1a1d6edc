/**
 * A follower to upgrade blue-green, as the blue-green test and the drivers
 * bench both need it on a lab's dockerd (docker-lab.ts): two validators run as
 * simulator processes, the follower in a container on the host network,
 * nginx on loopback in front of it (its own config and pid files; the agent
 * owns only upstream.conf), the release repository the agent trusts, and a
 * client loop that counts failed requests through the proxy. Everything
 * started here is stopped at teardown.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
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
  type NodeDescriptor,
  type ReleaseSigner,
  type SimChild,
} from '@guts-upgrade/simulator';
import { renderUpstream } from '../src/blue-green/proxy.js';
import { FAST_TIMINGS } from './helpers.js';
import type { DockerLab } from './docker-lab.js';

export const NGINX = '/usr/sbin/nginx';

interface Tap {
  teardown(fn: () => unknown): void;
}

export interface Loop {
  total: number;
  failed: number;
  errors: string[];
  /** Arrival time of the first answer from the new version, and of the last from the old. */
  firstNew: number | null;
  lastOld: number | null;
  stop(): Promise<void>;
}

/** ~50 requests/s through the proxy, each on a fresh connection (a reload closes idle keep-alive connections). */
export function clientLoop(url: string, oldV: string, newV: string | null): Loop {
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
  // A failed assertion before stop() must not keep the process alive.
  timer.unref();
  l.stop = async () => {
    clearInterval(timer);
    await Promise.all([...pending]);
  };
  return l;
}

export interface BlueGreenLab {
  dir: string;
  v0: NodeDescriptor;
  f0: NodeDescriptor;
  /** The proxy's address: what clients (and the agent's checks) use. */
  front: string;
  /** The upstream file the agent rewrites. */
  upstream: string;
  /** The second slot's API address: where green listens on the first upgrade. */
  otherApi: string;
  /** Where release archives go; the repository the agent trusts signs them from there. */
  artifacts: string;
  releases: ReleaseSigner;
  /** The follower's agent config (role follower, docker driver, both slots), with `extra` on top. */
  agentConfig(extra?: Record<string, unknown>): Record<string, unknown>;
  writeConfig(configPath: string, extra?: Record<string, unknown>): void;
  /** The names of every container on the engine, sorted. */
  names(): Promise<string[]>;
}

/** nginx on loopback in front of `backend`, from a config of its own under `dir`; stopped (by its pid) at teardown. */
async function startNginx(t: Tap, dir: string, backend: string) {
  fs.mkdirSync(path.join(dir, 'tmp'), { recursive: true });
  const [port] = await freePorts(1);
  const upstream = path.join(dir, 'upstream.conf');
  fs.writeFileSync(upstream, renderUpstream('nginx', 'guts_api', backend));
  const conf = path.join(dir, 'nginx.conf');
  const tmp = path.join(dir, 'tmp');
  fs.writeFileSync(
    conf,
    `pid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nworker_processes 1;\nevents { worker_connections 512; }\nhttp {\n  access_log off;\n` +
      `  client_body_temp_path ${tmp}/body; proxy_temp_path ${tmp}/proxy; fastcgi_temp_path ${tmp}/fcgi; uwsgi_temp_path ${tmp}/uwsgi; scgi_temp_path ${tmp}/scgi;\n` +
      `  include ${upstream};\n  server { listen 127.0.0.1:${port}; location / { proxy_pass http://guts_api; } }\n}\n`,
  );
  const argv = ['-p', dir, '-c', conf, '-e', path.join(dir, 'error.log')];
  execFileSync(NGINX, argv);
  t.teardown(async () => {
    const pidFile = path.join(dir, 'nginx.pid');
    const pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
    try {
      process.kill(pid, 'SIGQUIT');
    } catch {
      return;
    }
    await waitFor(() => !fs.existsSync(pidFile), { what: 'nginx gone', timeoutMs: 10_000 }).catch(() => process.kill(pid, 'SIGKILL'));
  });
  return { front: `http://127.0.0.1:${port}`, upstream, reload: [NGINX, ...argv, '-s', 'reload'] };
}

/** Short waits: a follower on a fast simulator is ready and in sync within seconds. */
const FOLLOWER_WAITS = { readyTimeoutMs: 6000, versionTimeoutMs: 5000, syncTimeoutMs: 15_000, commandTimeoutMs: 60_000 };

/** The follower f0 on `image` behind nginx, two validators beside it; ready when this resolves. */
export async function startBlueGreenLab(t: Tap, lab: DockerLab, o: { image: string; dataSizeMb?: number }): Promise<BlueGreenLab> {
  const dir = path.join(lab.dir, 'bg');
  const artifacts = path.join(dir, 'artifacts');
  fs.mkdirSync(artifacts, { recursive: true });
  const nodes = await createCluster({ n: 2, followers: ['f0'], dir: path.join(dir, 'cluster'), timings: FAST_TIMINGS, dataSizeMb: o.dataSizeMb ?? 1 });
  const [v0, v1, f0] = nodes as [NodeDescriptor, NodeDescriptor, NodeDescriptor];
  const kids: SimChild[] = [v0, v1].map((v) => spawnNode(CLI_JS, v.configPath));
  t.teardown(() => Promise.all(kids.map((k) => stopNode(k))));
  const server = await startArtifactServer({ dir: artifacts });
  t.teardown(() => server.close());
  const releases = createReleaseSigner(path.join(artifacts, 'release'));

  // The follower's container: host network; config and data dir bound apart (the data dir is its own mount).
  await (
    await lab.docker.createContainer({
      name: 'guts-node',
      Image: o.image,
      Cmd: ['--config', f0.configPath],
      HostConfig: { NetworkMode: 'host', Binds: [`${f0.configPath}:${f0.configPath}:ro`, `${f0.dataDir}:${f0.dataDir}`] },
    })
  ).start();
  const proxy = await startNginx(t, path.join(dir, 'nginx'), f0.apiAddr);
  await waitFor(async () => (await fetch(`${proxy.front}/health/ready`).catch(() => null))?.status === 200, {
    what: 'follower ready behind nginx',
    timeoutMs: 30_000,
  });
  const [api1, p2p1, met1] = await freePorts(3);
  const agentConfig = (extra: Record<string, unknown> = {}) => ({
    nodeId: 'f0',
    role: 'follower',
    service: { driver: 'docker', container: 'guts-node', dockerSocket: lab.socket, stopTimeoutMs: 5000 },
    node: { dataDir: f0.dataDir, config: f0.configPath, apiUrl: proxy.front, metricsUrl: null },
    stateDir: path.join(dir, 'state'),
    release: { repository: `${server.url}/release`, root: releases.root },
    fetch: { retries: 3, backoffMs: 50, timeoutMs: 30_000 },
    checks: { ...FOLLOWER_WAITS, syncDistance: 3, pollMaxMs: 300, httpTimeoutMs: 2000 },
    blueGreen: {
      proxy: { kind: 'nginx', config: proxy.upstream, reload: proxy.reload },
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
  return {
    dir,
    v0,
    f0,
    front: proxy.front,
    upstream: proxy.upstream,
    otherApi: `127.0.0.1:${api1}`,
    artifacts,
    releases,
    agentConfig,
    writeConfig: (configPath, extra) => fs.writeFileSync(configPath, YAML.stringify(agentConfig(extra))),
    names: async () => (await lab.docker.listContainers({ all: true })).map((c) => c.Names[0]!.replace(/^\//, '')).sort(),
  };
}
