/**
 * guts-node as one Docker container (`service: { driver: docker, container: guts-node }`).
 * An upgrade recreates the container with exactly its previous configuration
 * on the release image. That configuration is journaled before the old
 * container is removed, so a crash between removal and creation recreates it
 * from the journal (recovery rolls back through restore(), which creates the
 * container on the previous image from the same journaled configuration).
 */
import type Docker from 'dockerode';
import { CodedError } from '@guts-upgrade/protocol';
import type { AgentConfig } from '../config.js';
import type { StepContext } from '../steps/context.js';
import { sleep } from '../util.js';
import type { ImageRelease, ServiceDriver } from './driver.js';
import { containerLogTail, engine, engineError, hostUserOf, isNotFound, specFromInspect } from './engine.js';
import { imageReleaseOf } from './image-release.js';

export class DockerDriver implements ServiceDriver {
  readonly kind = 'docker' as const;
  readonly docker: Docker;
  readonly name: string;
  readonly images: ImageRelease;

  constructor(private readonly config: AgentConfig) {
    this.docker = engine(config);
    this.name = config.service.container;
    this.images = imageReleaseOf(this.docker, () => this.inspect(), `container ${this.name}`, {
      install: (ctx) => this.recreateOn(ctx, ctx.data.newImage!),
      restore: (ctx) => this.recreateOn(ctx, ctx.data.oldImage!),
    });
  }

  async inspect(): Promise<Docker.ContainerInspectInfo | null> {
    try {
      return await this.docker.getContainer(this.name).inspect();
    } catch (err) {
      if (isNotFound(err)) return null;
      throw engineError(this.config, err);
    }
  }

  async exists() {
    const info = await this.inspect();
    return { ok: info !== null, detail: info ? `container ${this.name} on image ${info.Image}` : `no container named ${this.name}` };
  }

  async isActive() {
    return (await this.inspect())?.State.Running === true;
  }

  async start() {
    const info = await this.inspect();
    if (!info) throw new CodedError('E_START', `container ${this.name} does not exist`);
    if (info.State.Running) return;
    try {
      await this.docker.getContainer(this.name).start();
    } catch (err) {
      throw new CodedError('E_START', `docker start ${this.name} failed: ${(err as Error).message}`);
    }
  }

  async stop() {
    const info = await this.inspect();
    if (!info?.State.Running) return;
    const t = Math.ceil(this.config.service.stopTimeoutMs / 1000);
    try {
      await this.docker.getContainer(this.name).stop({ t });
    } catch (err) {
      // 304: it stopped on its own meanwhile.
      if ((err as { statusCode?: number }).statusCode !== 304) throw new CodedError('E_STOP', `docker stop ${this.name} failed: ${(err as Error).message}`);
    }
    const deadline = Date.now() + this.config.service.stopTimeoutMs + 5_000;
    while (await this.isActive()) {
      if (Date.now() > deadline) throw new CodedError('E_STOP', `container ${this.name} still running after stop`);
      await sleep(100);
    }
  }

  async runsAs() {
    const info = await this.inspect();
    return info ? hostUserOf(info.Config.User) : null;
  }

  async logTail(lines: number) {
    return containerLogTail(this.docker, this.name, lines);
  }

  /**
   * The container, stopped, on `imageId` with its journaled configuration.
   * Idempotent: already there is a no-op; a missing container (a crash after
   * removal) is created from the journal.
   */
  private async recreateOn(ctx: StepContext, imageId: string): Promise<void> {
    const info = await this.inspect();
    if (info && info.Image === imageId) return;
    if (info) {
      if (!ctx.data.containerSpec) {
        const image = await this.docker
          .getImage(info.Image)
          .inspect()
          .catch(() => null);
        // Journaled before the removal: from here the journal is the only copy of the container's configuration.
        ctx.save({ containerSpec: specFromInspect(info, image) as Record<string, unknown> });
      }
      if (info.State.Running) await this.stop();
      try {
        await this.docker.getContainer(this.name).remove({ force: true });
      } catch (err) {
        if (!isNotFound(err)) throw new CodedError('E_INSTALL', `cannot remove container ${this.name}: ${(err as Error).message}`);
      }
      const step = ctx.journal.get(ctx.command.id)?.state === 'rollback' ? 'rollback' : 'install';
      ctx.progress(step, 'running', `removed container ${this.name} (its configuration is journaled)`);
      await ctx.afterJournal('container-removed');
    }
    const spec = ctx.data.containerSpec as Docker.ContainerCreateOptions | undefined;
    if (!spec) throw new CodedError('E_INSTALL', `container ${this.name} is gone and no configuration of it was journaled`);
    try {
      await this.docker.createContainer({ ...spec, name: this.name, Image: imageId });
    } catch (err) {
      throw new CodedError('E_INSTALL', `cannot create container ${this.name} on ${imageId}: ${(err as Error).message}`);
    }
  }
}
