/**
 * A real, private dockerd for tests (as /work/shared/docker.md describes: its
 * own data root, exec root and socket, no bridge, no iptables, vfs storage,
 * containers on the host network), and guts-node images built locally from
 * the simulator. No registry is reachable, so a base root file system (the
 * node binary, the libraries `ldd` lists, the simulator's compiled JS and its
 * dependencies) is imported once per lab, and each build adds one small layer
 * holding its launcher.
 *
 * Everything is removed at the end: containers, images, the data root, the
 * daemon (by its pid), and the netns mount dockerd leaves behind.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import YAML from 'yaml';
import { launcherSource, type Fault } from '@guts-upgrade/simulator';
import { follow } from '../src/service/engine.js';

interface Tap {
  teardown(fn: () => unknown): void;
}

export interface DockerLab {
  dir: string;
  socket: string;
  docker: Docker;
  /** Builds (once) the image of one simulator build; returns its tag and id. */
  image(version: string, fault?: Fault): Promise<{ tag: string; id: string }>;
  /**
   * The build as a release for an air-gapped host: `docker save` into
   * `<dir>/<name>.tar`, then the image is removed from the engine so that the
   * agent must load it from the archive. Returns the archive's path.
   */
  archive(outDir: string, version: string, fault?: Fault): Promise<string>;
  /**
   * The build as a registry release: pushed to `registry` (host:port, plain
   * http on loopback) as guts-node:<version>; returns its digest reference
   * (registry/guts-node@sha256:...). Unless `keep`, the image then leaves the
   * engine, so that the agent must pull it.
   */
  push(registry: string, version: string, opts?: { fault?: Fault; keep?: boolean }): Promise<string>;
  stop(): Promise<void>;
}

const DOCKERD = ['/usr/sbin/dockerd', '/usr/bin/dockerd'].find((b) => fs.existsSync(b));

/** Why docker tests cannot run here, or null when they can. */
export function dockerSkipReason(): string | null {
  if (process.getuid?.() !== 0) return 'dockerd needs root: run the docker tests as root';
  if (!DOCKERD) return 'no dockerd binary: apt-get install docker.io';
  return null;
}

/** Why compose tests cannot run here, or null when they can. */
export function composeSkipReason(): string | null {
  return dockerSkipReason() ?? (composeBinary() ? null : 'no docker-compose: apt-get install docker-compose');
}

export function composeBinary(): string | undefined {
  return ['/usr/bin/docker-compose', '/usr/local/bin/docker-compose'].find((b) => fs.existsSync(b));
}

const REPO_ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
export const IMAGE_MAIN_JS = '/app/node_modules/@guts-upgrade/simulator/dist/src/main.js';

/** The files the simulator needs at run time, under <root>/app/node_modules. */
function copyApp(root: string): void {
  const nm = path.join(root, 'app', 'node_modules');
  const pkg = (name: string, from: string, parts: string[]) => {
    const to = path.join(nm, name);
    fs.mkdirSync(to, { recursive: true });
    for (const p of parts) if (fs.existsSync(path.join(from, p))) fs.cpSync(path.join(from, p), path.join(to, p), { recursive: true });
  };
  pkg('@guts-upgrade/simulator', path.join(REPO_ROOT, 'packages/simulator'), ['package.json', 'dist/src']);
  pkg('@guts-upgrade/protocol', path.join(REPO_ROOT, 'packages/protocol'), ['package.json', 'dist/src']);
  for (const dep of ['yaml', 'semver', '@sinclair/typebox', 'node-cron']) pkg(dep, path.join(REPO_ROOT, 'node_modules', dep), ['.']);
}

/** The node binary and the shared libraries `ldd` lists, at their paths; /tmp; a passwd naming nobody. */
function copyNodeAndLibs(root: string): void {
  const node = fs.realpathSync(process.execPath);
  const put = (src: string, dest: string) => {
    fs.mkdirSync(path.dirname(path.join(root, dest)), { recursive: true });
    fs.copyFileSync(fs.realpathSync(src), path.join(root, dest));
    fs.chmodSync(path.join(root, dest), 0o755);
  };
  put(node, '/usr/local/bin/node');
  const ldd = execFileSync('ldd', [node], { encoding: 'utf8' });
  for (const line of ldd.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) put(m[1]!, m[1]!);
  }
  fs.mkdirSync(path.join(root, 'tmp'), { recursive: true });
  fs.chmodSync(path.join(root, 'tmp'), 0o1777);
  fs.mkdirSync(path.join(root, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(root, 'etc/passwd'), 'root:x:0:0:root:/:/nonexistent\nnobody:x:65534:65534:nobody:/:/nonexistent\n');
  fs.writeFileSync(path.join(root, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
}

function mountsUnder(dir: string): string[] {
  const text = fs.readFileSync('/proc/self/mounts', 'utf8');
  return text
    .split('\n')
    .map((l) => l.split(' ')[1] ?? '')
    .filter((m) => m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/** docker-compose run in `cwd` against the lab's engine; resolves with its exit code. */
export function composeRun(lab: Pick<DockerLab, 'socket'>, args: string[], cwd: string): Promise<number | null> {
  return new Promise((resolve) => {
    const c = spawn(composeBinary()!, args, { cwd, env: { ...process.env, DOCKER_HOST: `unix://${lab.socket}` }, stdio: 'ignore' });
    c.on('error', () => resolve(null));
    c.on('close', resolve);
  });
}

export interface ComposeProject {
  /** The operator's file, <dir>/docker-compose.yml. */
  file: string;
  /** docker-compose -f <file> <args> in the project's directory; its exit code. */
  run(args: string[]): Promise<number | null>;
}

/**
 * An operator's Compose project for one simulator node, brought up (`up -d`)
 * and taken down at teardown: service guts-node on `image`, host network,
 * `mount` bind-mounted at the same path, the node's config as its command.
 */
export async function startComposeProject(
  t: Tap,
  lab: Pick<DockerLab, 'socket'>,
  o: { dir: string; image: string; configPath: string; mount: string; environment?: Record<string, string> },
): Promise<ComposeProject> {
  fs.mkdirSync(o.dir, { recursive: true });
  const file = path.join(o.dir, 'docker-compose.yml');
  const service = {
    image: o.image,
    network_mode: 'host',
    restart: 'unless-stopped',
    command: ['--config', o.configPath],
    volumes: [`${o.mount}:${o.mount}`],
    ...(o.environment ? { environment: o.environment } : {}),
  };
  fs.writeFileSync(file, YAML.stringify({ version: '2.4', services: { 'guts-node': service } }));
  const run = (args: string[]) => composeRun(lab, ['-f', file, ...args], o.dir);
  const up = await run(['up', '-d']);
  t.teardown(() => run(['down']));
  if (up !== 0) throw new Error(`docker-compose up -d of ${file} exited ${up}`);
  return { file, run };
}

export function imageTag(version: string, fault: Fault = 'none'): string {
  return `guts-node:${version}${fault === 'none' ? '' : `-${fault}`}`;
}

export async function startDockerLab(t: Tap): Promise<DockerLab> {
  // A short path: unix socket paths are limited to 108 bytes.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gd-'));
  const socket = path.join(dir, 'docker.sock');
  const logFile = path.join(dir, 'dockerd.log');
  const log = fs.openSync(logFile, 'a');
  const child: ChildProcess = spawn(
    DOCKERD!,
    [
      '--data-root',
      path.join(dir, 'data'),
      '--exec-root',
      path.join(dir, 'exec'),
      '--host',
      `unix://${socket}`,
      '--pidfile',
      path.join(dir, 'dockerd.pid'),
      '--iptables=false',
      '--ip6tables=false',
      '--bridge=none',
      '--storage-driver=vfs',
    ],
    { stdio: ['ignore', log, log] },
  );
  fs.closeSync(log);
  const docker = new Docker({ socketPath: socket });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    try {
      for (const c of await docker.listContainers({ all: true })) await docker.getContainer(c.Id).remove({ force: true, v: true });
    } catch {
      /* the daemon is gone already */
    }
    // Only the daemon this lab started: by its own pid.
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<boolean>((r) => {
        const timer = setTimeout(() => r(false), 20_000);
        child.once('exit', () => {
          clearTimeout(timer);
          r(true);
        });
      });
      child.kill('SIGTERM');
      if (!(await exited)) {
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
      }
    }
    // dockerd leaves $DIR/exec/netns/default mounted (and vfs may leave more): unmount, deepest first.
    for (const m of mountsUnder(dir)) {
      try {
        execFileSync('umount', ['-l', m], { stdio: 'ignore' });
      } catch {
        /* not mounted */
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  t.teardown(stop);
  const t0 = Date.now();
  for (;;) {
    try {
      await docker.ping();
      break;
    } catch {
      if (child.exitCode !== null || Date.now() - t0 > 60_000) {
        const text = fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').slice(-2000) : '';
        await stop();
        throw new Error(`dockerd did not come up: ${text}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  let base: Promise<string> | null = null;
  const buildBase = async (): Promise<string> => {
    const root = path.join(dir, 'rootfs');
    copyNodeAndLibs(root);
    copyApp(root);
    const tarFile = path.join(dir, 'rootfs.tar');
    execFileSync('tar', ['-C', root, '-cf', tarFile, '.']);
    fs.rmSync(root, { recursive: true, force: true });
    // ENTRYPOINT and PATH on the base: in a build each would be one more layer, a full copy under vfs.
    const stream = (await docker.importImage(tarFile, {
      repo: 'guts-node-base',
      tag: 'lab',
      changes: ['ENTRYPOINT ["/usr/local/bin/guts-node"]', 'ENV PATH=/usr/local/bin:/usr/bin:/bin'],
    } as never)) as unknown as NodeJS.ReadableStream;
    await follow(docker, stream);
    fs.rmSync(tarFile, { force: true });
    return 'guts-node-base:lab';
  };
  const built = new Map<string, Promise<{ tag: string; id: string }>>();
  const image = (version: string, fault: Fault = 'none') => {
    const tag = imageTag(version, fault);
    let p = built.get(tag);
    if (!p) {
      p = (async () => {
        base ??= buildBase();
        const from = await base;
        const ctxDir = fs.mkdtempSync(path.join(dir, 'ctx-'));
        fs.writeFileSync(path.join(ctxDir, 'guts-node'), launcherSource({ version, fault, nodePath: '/usr/local/bin/node', mainJs: IMAGE_MAIN_JS }), {
          mode: 0o755,
        });
        fs.writeFileSync(path.join(ctxDir, 'Dockerfile'), `FROM ${from}\nCOPY guts-node /usr/local/bin/guts-node\n`);
        await follow(docker, await docker.buildImage({ context: ctxDir, src: ['Dockerfile', 'guts-node'] }, { t: tag }));
        fs.rmSync(ctxDir, { recursive: true, force: true });
        const info = await docker.getImage(tag).inspect();
        return { tag, id: info.Id };
      })();
      built.set(tag, p);
    }
    return p;
  };
  const archive = async (outDir: string, version: string, fault: Fault = 'none') => {
    const { tag } = await image(version, fault);
    fs.mkdirSync(outDir, { recursive: true });
    const file = path.join(outDir, `${tag.replace(/[^A-Za-z0-9.-]/g, '_')}.tar`);
    const stream = await docker.getImage(tag).get();
    await new Promise<void>((resolve, reject) => {
      const out = fs.createWriteStream(file);
      stream.on('error', reject);
      out.on('error', reject);
      out.on('finish', () => resolve());
      stream.pipe(out);
    });
    await docker.getImage(tag).remove();
    built.delete(tag);
    return file;
  };
  const push = async (registry: string, version: string, opts: { fault?: Fault; keep?: boolean } = {}) => {
    const fault = opts.fault ?? 'none';
    const { id } = await image(version, fault);
    const repo = `${registry}/guts-node`;
    const tag = `${version}${fault === 'none' ? '' : `-${fault}`}`;
    await docker.getImage(id).tag({ repo, tag });
    // The digest comes in the push stream's aux record ({ Tag, Digest, Size }).
    const out = await new Promise<{ error?: string; aux?: { Digest?: string } }[]>((resolve, reject) => {
      void docker
        .getImage(`${repo}:${tag}`)
        // An empty auth header: the engine refuses a push without one, and this registry needs no login.
        .push({ authconfig: {} } as Docker.ImagePushOptions)
        .then((stream: NodeJS.ReadableStream) =>
          docker.modem.followProgress(stream, (err: Error | null, res: { error?: string; aux?: { Digest?: string } }[]) => (err ? reject(err) : resolve(res))),
        )
        .catch(reject);
    });
    const bad = out.find((o) => o.error)?.error;
    if (bad) throw new Error(`docker push ${repo}:${tag} failed: ${bad}`);
    const digest = out.find((o) => o.aux?.Digest)?.aux?.Digest;
    if (!digest) throw new Error(`docker push ${repo}:${tag} reported no digest`);
    // Kept, it keeps its registry tag too: untagging the last tag of a repository drops its digest references with it.
    if (!opts.keep) {
      // By id and forced: every name and digest reference goes with it.
      await docker.getImage(id).remove({ force: true });
      built.delete(imageTag(version, fault));
    }
    return `${repo}@${digest}`;
  };
  return { dir, socket, docker, image, archive, push, stop };
}

export interface Registry {
  /** host:port, for image references. */
  host: string;
  /** Stops the registry (its storage stays, for start()). */
  stop(): Promise<void>;
  start(): Promise<void>;
}

export const REGISTRY_BINARY = '/usr/bin/docker-registry';

/** Why registry tests cannot run here, or null when they can. */
export function registrySkipReason(): string | null {
  return dockerSkipReason() ?? (fs.existsSync(REGISTRY_BINARY) ? null : 'no docker-registry: apt-get install docker-registry');
}

async function freePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/**
 * A real image registry (Debian's docker-registry, distribution v2) on a
 * loopback port, with its own config and storage in `dir`. Docker treats
 * 127.0.0.0/8 registries as insecure by default, so plain http works.
 */
export async function startRegistry(t: Tap, dir: string): Promise<Registry> {
  fs.mkdirSync(path.join(dir, 'storage'), { recursive: true });
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const config = path.join(dir, 'config.yml');
  fs.writeFileSync(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: warn',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${path.join(dir, 'storage')}`,
      'http:',
      `  addr: ${host}`,
      '',
    ].join('\n'),
  );
  let child: ChildProcess | null = null;
  const stop = async () => {
    const c = child;
    child = null;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 10_000);
    await gone;
    clearTimeout(timer);
  };
  const start = async () => {
    if (child) return;
    const log = fs.openSync(path.join(dir, 'registry.log'), 'a');
    const c = spawn(REGISTRY_BINARY, ['serve', config], { stdio: ['ignore', log, log] });
    fs.closeSync(log);
    child = c;
    const t0 = Date.now();
    for (;;) {
      const ok = await fetch(`http://${host}/v2/`)
        .then((r) => r.status === 200)
        .catch(() => false);
      if (ok) return;
      if (c.exitCode !== null || Date.now() - t0 > 30_000) {
        await stop();
        throw new Error(`docker-registry did not come up: ${fs.readFileSync(path.join(dir, 'registry.log'), 'utf8').slice(-2000)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  t.teardown(stop);
  await start();
  return { host, stop, start };
}
