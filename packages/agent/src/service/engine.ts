/**
 * What the docker and compose drivers share: the Docker engine's API (through
 * dockerode, over its unix socket: the engine's JSON instead of CLI text to
 * parse), image archives, one-shot containers, and logs.
 */
import fs from 'node:fs';
import Docker from 'dockerode';
import * as tar from 'tar';
import { CodedError, parseImageRef, parseVersionOutput, type ImageRef } from '@guts-upgrade/protocol';
import type { AgentConfig } from '../config.js';
import { tailLines, type RunResult } from '../util.js';
import type { ImageVersion } from './driver.js';

/** nobody:nogroup, the uid and gid a candidate's first run gets: never root. */
export const CANDIDATE_USER = '65534:65534';

/**
 * The container's user as the host can name it, for the commands the agent
 * runs on the host as the node's user (the smoke command): none set is root;
 * "uid:gid" is the same on both sides; a name (or a bare uid) belongs to the
 * image's own passwd, so null: the owner of the data dir decides instead.
 */
export function hostUserOf(user: string | undefined): string | null {
  if (!user) return 'root';
  return /^\d+:\d+$/.test(user) ? user : null;
}

export function engine(config: AgentConfig): Docker {
  return new Docker({ socketPath: config.service.dockerSocket });
}

export function isNotFound(err: unknown): boolean {
  return (err as { statusCode?: number }).statusCode === 404;
}

/** An engine that does not answer is a host problem, not a failed build: it gets its own code. */
export function engineError(config: AgentConfig, err: unknown): CodedError {
  return new CodedError('E_DOCKER_ENGINE', `the Docker engine at ${config.service.dockerSocket} did not answer: ${(err as Error).message}`);
}

/** Non-TTY container logs come as frames: an 8-byte header (stream, 0, 0, 0, size big-endian), then the bytes. */
export function demuxLogs(buf: Buffer): { stdout: string; stderr: string } {
  let stdout = '';
  let stderr = '';
  let i = 0;
  while (i + 8 <= buf.length) {
    const kind = buf[i]!;
    const size = buf.readUInt32BE(i + 4);
    const chunk = buf.subarray(i + 8, i + 8 + size).toString();
    if (kind === 2) stderr += chunk;
    else stdout += chunk;
    i += 8 + size;
  }
  return { stdout, stderr };
}

export async function containerLogTail(docker: Docker, id: string, lines: number): Promise<string[]> {
  try {
    const buf = (await docker.getContainer(id).logs({ stdout: true, stderr: true, tail: lines, follow: false })) as unknown as Buffer;
    const { stdout, stderr } = demuxLogs(buf);
    return tailLines(stdout + stderr, lines);
  } catch {
    return [];
  }
}

/** The image id (sha256:<hex>) an image archive (`docker save`, legacy or OCI layout) declares in its manifest.json. */
export async function archiveImageId(file: string): Promise<string> {
  let manifest = '';
  try {
    await tar.t({
      file,
      filter: (p) => p === 'manifest.json' || p === './manifest.json',
      onReadEntry: (e) => {
        e.on('data', (d: Buffer) => {
          manifest += d.toString();
        });
      },
    });
  } catch (err) {
    throw new CodedError('E_ARTIFACT_INVALID', `${file} is not a tar archive (docker save): ${(err as Error).message}`);
  }
  let entries: unknown;
  try {
    entries = JSON.parse(manifest);
  } catch {
    throw new CodedError('E_ARTIFACT_INVALID', `${file} is not an image archive: it holds no readable manifest.json`);
  }
  const list = Array.isArray(entries) ? (entries as { Config?: unknown }[]) : [];
  if (list.length !== 1 || typeof list[0]?.Config !== 'string') {
    throw new CodedError('E_ARTIFACT_INVALID', `${file} must hold exactly one image (its manifest.json lists ${list.length})`);
  }
  const hex = /([0-9a-f]{64})(\.json)?$/.exec(list[0].Config)?.[1];
  if (!hex) throw new CodedError('E_ARTIFACT_INVALID', `${file}: cannot read the image id from ${list[0].Config}`);
  return `sha256:${hex}`;
}

/** Waits for an engine operation that streams progress (load, build, pull) and fails with its first error. */
export async function follow(docker: Docker, stream: NodeJS.ReadableStream): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(stream, (err: Error | null, out: { error?: string }[]) => {
      const bad = err?.message ?? out.find((o) => o.error)?.error;
      if (bad) reject(new Error(bad));
      else resolve();
    });
  });
}

/** `docker load` of an archive; the engine must then hold exactly the image the archive's manifest names. */
export async function loadArchive(docker: Docker, file: string): Promise<string> {
  const want = await archiveImageId(file);
  try {
    await follow(docker, await docker.loadImage(fs.createReadStream(file), { quiet: true }));
  } catch (err) {
    throw new CodedError('E_ARTIFACT_INVALID', `docker load of ${file} failed: ${(err as Error).message}`);
  }
  const info = await docker
    .getImage(want)
    .inspect()
    .catch(() => null);
  if (!info || info.Id !== want) throw new CodedError('E_ARTIFACT_INVALID', `the engine does not hold ${want} after loading ${file}`);
  return info.Id;
}

/** The engine did not answer at all (its socket refused or is missing), as opposed to answering with an error. */
function noAnswer(docker: Docker, err: unknown): CodedError | null {
  if ((err as { statusCode?: number }).statusCode !== undefined) return null;
  const code = (err as { code?: string }).code;
  if (code !== 'ECONNREFUSED' && code !== 'ENOENT' && code !== 'EACCES' && code !== 'ECONNRESET') return null;
  return new CodedError(
    'E_DOCKER_ENGINE',
    `the Docker engine at ${(docker.modem as { socketPath?: string }).socketPath ?? 'its socket'} did not answer: ${(err as Error).message}`,
  );
}

/** docker.io names as the engine shows them (familiar form): docker.io/library/x is x, docker.io/o/x is o/x. */
function familiar(name: string): string {
  const n = name.replace(/^docker\.io\//, '');
  return name.startsWith('docker.io/') ? n.replace(/^library\//, '') : n;
}

/** The id of the image the engine holds under the ref's name and digest (one of its RepoDigests), or null. */
async function imageByDigest(docker: Docker, want: ImageRef): Promise<string | null> {
  let info: Docker.ImageInspectInfo;
  try {
    info = await docker.getImage(want.ref).inspect();
  } catch (err) {
    if (isNotFound(err)) return null;
    throw noAnswer(docker, err) ?? new CodedError('E_IMAGE_PULL', `the engine cannot inspect ${want.ref}: ${(err as Error).message}`);
  }
  const held = (info.RepoDigests ?? []).some((d) => {
    const at = d.lastIndexOf('@');
    return d.slice(at + 1) === want.digest && familiar(d.slice(0, at)) === familiar(want.repository);
  });
  return held ? info.Id : null;
}

/**
 * The release image by digest: reused when the engine already holds it under
 * that name and digest (the registry is not contacted, so a host that has it
 * can upgrade while the registry is down), else pulled through the engine's
 * API. Accepted only when the engine then lists exactly the ref's digest
 * among the image's RepoDigests: the digest the release keys signed is the
 * manifest the engine pulled and checked.
 */
export async function pullImage(docker: Docker, ref: string): Promise<{ id: string; pulled: boolean }> {
  const want = parseImageRef(ref);
  const held = await imageByDigest(docker, want);
  if (held) return { id: held, pulled: false };
  try {
    // fromImage + tag: the engine takes a digest in `tag` as a digest (what `docker pull NAME@DIGEST` sends).
    await follow(docker, await docker.createImage({ fromImage: want.repository, tag: want.digest }));
  } catch (err) {
    throw (
      noAnswer(docker, err) ??
      new CodedError('E_IMAGE_PULL', `pulling ${ref} failed: ${(err as Error).message.trim().slice(0, 500)}; nothing was changed on the node`)
    );
  }
  const id = await imageByDigest(docker, want);
  if (!id) {
    throw new CodedError(
      'E_IMAGE_PULL',
      `after pulling ${ref} the engine holds no image whose RepoDigests name ${want.digest}; nothing was changed on the node`,
    );
  }
  return { id, pulled: true };
}

/** Runs a one-shot container, collects its exit code and output, and removes it whatever happens. */
export async function runOnce(docker: Docker, opts: Docker.ContainerCreateOptions, timeoutMs: number): Promise<RunResult> {
  const c = await docker.createContainer(opts);
  try {
    await c.start();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      void c.kill().catch(() => undefined);
    }, timeoutMs);
    const r = (await c.wait()) as { StatusCode: number };
    clearTimeout(timer);
    const buf = (await c.logs({ stdout: true, stderr: true, follow: false })) as unknown as Buffer;
    const { stdout, stderr } = demuxLogs(buf);
    return { code: timedOut ? null : r.StatusCode, signal: timedOut ? 'SIGKILL' : null, stdout, stderr, timedOut };
  } finally {
    await c.remove({ force: true }).catch(() => undefined);
  }
}

/**
 * `guts-node --version` in an image: as nobody, with no network and no
 * mounts, so a candidate's first run can reach neither the data nor the peers.
 */
export async function imageVersion(docker: Docker, imageId: string, timeoutMs = 60_000): Promise<ImageVersion> {
  const r = await runOnce(
    docker,
    { Image: imageId, Cmd: ['--version'], User: CANDIDATE_USER, NetworkDisabled: true, HostConfig: { NetworkMode: 'none' } },
    timeoutMs,
  );
  const output = (r.stdout + r.stderr).trim() + (r.timedOut ? ` (no answer within ${timeoutMs} ms; killed)` : '');
  return { version: r.code === 0 ? parseVersionOutput(r.stdout) : null, output };
}

/** The node's one-shot commands (migrate, verify): the release image with the node container's mounts and user, no network. */
export function oneShotOptions(imageId: string, argv: string[], info: Docker.ContainerInspectInfo): Docker.ContainerCreateOptions {
  const host = info.HostConfig;
  return {
    Image: imageId,
    Entrypoint: [argv[0]!],
    Cmd: argv.slice(1),
    User: info.Config.User ?? '',
    Env: info.Config.Env ?? [],
    HostConfig: { Binds: host.Binds ?? [], Mounts: host.Mounts ?? [], NetworkMode: 'none' },
  };
}

/** Host path -> the same file as the container sees it, through its bind or volume mounts (longest source wins). */
export function mapToContainer(hostPath: string, mounts: { Source: string; Destination: string }[]): string {
  let best: { Source: string; Destination: string } | null = null;
  for (const m of mounts) {
    if ((hostPath === m.Source || hostPath.startsWith(`${m.Source}/`)) && (!best || m.Source.length > best.Source.length)) best = m;
  }
  return best ? best.Destination + hostPath.slice(best.Source.length) : hostPath;
}

const same = (a: unknown, b: unknown) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);

/**
 * The create options that give back a container as `docker inspect` shows it,
 * on any image: its host config whole (ports, binds and volumes, restart
 * policy, network mode), and the env, command, entrypoint, user, working dir,
 * labels and exposed ports it set beyond its image's defaults, so the new
 * image's own defaults apply as they would under the same `docker run`.
 */
export function specFromInspect(info: Docker.ContainerInspectInfo, image: Docker.ImageInspectInfo | null): Docker.ContainerCreateOptions {
  const c = info.Config;
  const ic = image?.Config;
  const imageEnv = new Set(ic?.Env ?? []);
  const spec: Docker.ContainerCreateOptions = {
    name: info.Name.replace(/^\//, ''),
    Env: (c.Env ?? []).filter((e) => !imageEnv.has(e)),
    HostConfig: info.HostConfig,
    Tty: c.Tty,
    OpenStdin: c.OpenStdin,
  };
  if (!same(c.Cmd, ic?.Cmd)) spec.Cmd = c.Cmd as string[];
  if (!same(c.Entrypoint, ic?.Entrypoint)) spec.Entrypoint = c.Entrypoint as string[];
  if (!same(c.User, ic?.User)) spec.User = c.User;
  if (!same(c.WorkingDir, ic?.WorkingDir)) spec.WorkingDir = c.WorkingDir;
  if (!same(c.ExposedPorts, ic?.ExposedPorts)) spec.ExposedPorts = c.ExposedPorts;
  const stopSignal = (c as { StopSignal?: string }).StopSignal;
  if (stopSignal && !same(stopSignal, (ic as { StopSignal?: string } | undefined)?.StopSignal)) spec.StopSignal = stopSignal;
  const imageLabels = ic?.Labels ?? {};
  const labels = Object.fromEntries(Object.entries(c.Labels ?? {}).filter(([k, v]) => imageLabels[k] !== v));
  if (Object.keys(labels).length > 0) spec.Labels = labels;
  return spec;
}
