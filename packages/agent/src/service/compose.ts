/**
 * guts-node as one service of the operator's Compose project
 * (`service: { driver: compose, file: /srv/guts/docker-compose.yml, service: guts-node }`).
 * Debian ships the Compose v1 CLI (`docker-compose` 1.29), so that is what is
 * driven. The operator's file is never edited: the release image is pinned in
 * an override file the agent owns (<stateDir>/compose/override.yml), passed as
 * a second `-f`; rollback puts the previous override back (journaled before
 * the first write). Operators who run `docker-compose` by hand pass the same
 * two files (docs/operating.md).
 */
import fs from 'node:fs';
import path from 'node:path';
import type Docker from 'dockerode';
import { CodedError } from '@guts-upgrade/protocol';
import type { AgentConfig } from '../config.js';
import type { StepContext } from '../steps/context.js';
import { runArgv, sleep, writeFileAtomic, type RunResult } from '../util.js';
import type { ImageRelease, ServiceDriver } from './driver.js';
import { containerLogTail, engine, engineError, hostUserOf } from './engine.js';
import { fileVersion, overridePath, overrideText } from './compose-override.js';
import { imageReleaseOf } from './image-release.js';

/** The project name Compose v1 derives from the file's directory when none is given (its own normalisation). */
export function defaultProject(file: string): string {
  return path
    .basename(path.dirname(file))
    .toLowerCase()
    .replace(/[^-_a-z0-9]/g, '');
}

/** A tag the agent owns, so the override names the exact loaded image without relying on how Compose parses "sha256:". */
export function releaseTag(version: string | undefined, imageId: string): string {
  return `guts-upgrade/guts-node:${(version ?? 'release').replace(/[^A-Za-z0-9_.-]/g, '_')}-${imageId.replace(/^sha256:/, '').slice(0, 12)}`;
}

export class ComposeDriver implements ServiceDriver {
  readonly kind = 'compose' as const;
  readonly docker: Docker;
  readonly images: ImageRelease;
  private readonly file: string;
  private readonly service: string;
  private readonly project: string;
  private readonly override: string;

  constructor(private readonly config: AgentConfig) {
    this.docker = engine(config);
    this.file = config.service.file!;
    this.service = config.service.service;
    this.project = config.service.project ?? defaultProject(this.file);
    this.override = overridePath(config);
    this.images = imageReleaseOf(this.docker, () => this.inspect(), `the container of service ${this.service} (${this.file})`, {
      install: (ctx) => this.pin(ctx),
      restore: (ctx) => this.unpin(ctx),
    });
  }

  /** `docker-compose` with the operator's file, then the agent's override when there is one. */
  compose(args: string[], timeoutMs = 120_000): Promise<RunResult> {
    const files = ['-f', this.file, ...(fs.existsSync(this.override) ? ['-f', this.override] : [])];
    return runArgv(['docker-compose', '-p', this.project, ...files, ...args], {
      timeoutMs,
      cwd: path.dirname(this.file),
      env: { ...process.env, DOCKER_HOST: `unix://${this.config.service.dockerSocket}` },
    });
  }

  private async must(args: string[], code: 'E_START' | 'E_INSTALL' | 'E_COMPOSE', timeoutMs?: number): Promise<string> {
    const r = await this.compose(args, timeoutMs);
    if (r.code !== 0) {
      throw new CodedError(code, `docker-compose ${args.join(' ')} failed (${r.code ?? r.signal}): ${(r.stderr || r.stdout).trim().slice(-1000)}`);
    }
    return r.stdout;
  }

  /** The service's container, found by the labels Compose puts on it: one engine call, no Python start-up. */
  async inspect(): Promise<Docker.ContainerInspectInfo | null> {
    try {
      const list = await this.docker.listContainers({
        all: true,
        filters: { label: [`com.docker.compose.project=${this.project}`, `com.docker.compose.service=${this.service}`] },
      });
      const id = list[0]?.Id;
      return id ? await this.docker.getContainer(id).inspect() : null;
    } catch (err) {
      throw engineError(this.config, err);
    }
  }

  async exists() {
    if (!fs.existsSync(this.file)) return { ok: false, detail: `compose file ${this.file} missing` };
    const r = await this.compose(['config', '--services'], 60_000);
    if (r.code !== 0) throw new CodedError('E_COMPOSE', `docker-compose -f ${this.file} config failed: ${r.stderr.trim().slice(-500)}`);
    const ok = r.stdout.split('\n').some((s) => s.trim() === this.service);
    if (!ok) return { ok, detail: `service ${this.service} is not defined in ${this.file}` };
    const info = await this.inspect();
    return {
      ok: info !== null,
      detail: info
        ? `service ${this.service} of project ${this.project} on image ${info.Image}`
        : `service ${this.service} has no container (docker-compose up it first)`,
    };
  }

  async isActive() {
    return (await this.inspect())?.State.Running === true;
  }

  /**
   * The container install (or rollback) created with `up --no-start` on the
   * pinned image, started by the engine API: docker-compose's own start-up
   * stays out of the node's downtime. `up -d` when the service has none.
   */
  async start() {
    const info = await this.inspect();
    if (!info) {
      await this.must(['up', '-d', '--no-deps', this.service], 'E_START', this.config.checks.readyTimeoutMs);
      return;
    }
    if (info.State.Running) return;
    try {
      await this.docker.getContainer(info.Id).start();
    } catch (err) {
      throw new CodedError('E_START', `starting the container of ${this.service} failed: ${(err as Error).message}`);
    }
  }

  /** By the engine API on the service's container: what `docker-compose stop` does, without its start-up in the downtime. */
  async stop() {
    const info = await this.inspect();
    if (!info?.State.Running) return;
    const t = Math.ceil(this.config.service.stopTimeoutMs / 1000);
    try {
      await this.docker.getContainer(info.Id).stop({ t });
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 304)
        throw new CodedError('E_STOP', `docker stop of ${this.service} failed: ${(err as Error).message}`);
    }
    const deadline = Date.now() + this.config.service.stopTimeoutMs + 5_000;
    while (await this.isActive()) {
      if (Date.now() > deadline) throw new CodedError('E_STOP', `service ${this.service} still running after stop`);
      await sleep(100);
    }
  }

  async runsAs() {
    const info = await this.inspect();
    return info ? hostUserOf(info.Config.User) : null;
  }

  async logTail(lines: number) {
    const info = await this.inspect();
    return info ? containerLogTail(this.docker, info.Id, lines) : [];
  }

  /** install: journal the current override, pin the release image, create the service's container (not started). */
  private async pin(ctx: StepContext): Promise<void> {
    if (!('prevOverride' in ctx.data)) {
      ctx.save({ prevOverride: fs.existsSync(this.override) ? fs.readFileSync(this.override, 'utf8') : null });
    }
    const image = ctx.data.newImage!;
    const tag = releaseTag(ctx.data.toVersion, image);
    const [repo, t] = tag.split(':') as [string, string];
    await this.docker.getImage(image).tag({ repo, tag: t });
    this.writeOverride(overrideText(this.service, tag, fileVersion(this.file)));
    ctx.progress('install', 'running', `pinned ${tag} in ${this.override}`);
    await ctx.afterJournal('override-written');
    await this.must(['up', '--no-start', '--no-deps', this.service], 'E_INSTALL');
    ctx.progress('install', 'running', `recreated the container of ${this.service} on ${tag} (not started)`);
    await ctx.afterJournal('service-recreated');
  }

  /** rollback: the override as it was before the upgrade (or none), the container recreated on it. */
  private async unpin(ctx: StepContext): Promise<void> {
    if (!('prevOverride' in ctx.data)) return; // install never ran: the override is untouched
    const prev = ctx.data.prevOverride ?? null;
    if (prev === null) fs.rmSync(this.override, { force: true });
    else this.writeOverride(prev);
    await this.must(['up', '--no-start', '--no-deps', this.service], 'E_INSTALL');
  }

  private writeOverride(text: string): void {
    fs.mkdirSync(path.dirname(this.override), { recursive: true });
    writeFileAtomic(this.override, text);
  }
}
