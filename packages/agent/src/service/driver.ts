/**
 * How the agent stops and starts guts-node. Production uses systemd; the demo
 * and tests use the process driver; containerized hosts use docker or compose.
 * All drive real processes.
 */
import type { AgentConfig } from '../config.js';
import type { StepContext } from '../steps/context.js';
import type { RunResult } from '../util.js';
import { ProcessDriver } from './process.js';
import { SystemdDriver } from './systemd.js';

export type DriverKind = AgentConfig['service']['driver'];

export interface ServiceDriver {
  readonly kind: DriverKind;
  /** Whether the unit/binary the driver controls exists. */
  exists(): Promise<{ ok: boolean; detail: string }>;
  isActive(): Promise<boolean>;
  start(): Promise<void>;
  /** Stops and waits until the process is gone; throws E_STOP on timeout. */
  stop(): Promise<void>;
  /** Last log lines of the node, for evidence on failure. */
  logTail(lines: number): Promise<string[]>;
  /** The user the service runs the node as ('root' when none is set), or null when the driver cannot tell. */
  runsAs(): Promise<string | null>;
  /**
   * Container drivers only: the release is an image, not a binary file. The
   * steps call these where they would handle the binary.
   */
  readonly images?: ImageRelease;
}

export interface ImageVersion {
  version: string | null;
  output: string;
}

export interface ImageRelease {
  /** The image the node's container runs now (its id) and what its `guts-node --version` says. */
  current(): Promise<{ imageId: string } & ImageVersion>;
  /**
   * fetch: loads the staged image archive (its sha256 already checked against
   * the release), checks the loaded image is the one the archive's manifest
   * names, and returns its id.
   */
  load(archive: string): Promise<string>;
  /**
   * fetch: the release image named by digest in the signed release
   * (host/name@sha256:...): reused when the engine holds it under that digest,
   * else pulled; checked against the digest either way (E_IMAGE_PULL).
   */
  pull(ref: string): Promise<{ id: string; pulled: boolean }>;
  /** `guts-node --version` in an image, as nobody, with no network. */
  version(imageId: string): Promise<ImageVersion>;
  /** install: the node's container on ctx.data.newImage, not started. Idempotent. */
  install(ctx: StepContext): Promise<void>;
  /** rollback: the node's container back on ctx.data.oldImage, not started. Idempotent. */
  restore(ctx: StepContext): Promise<void>;
  /** Runs an argv in a one-shot container of the image, with the node container's mounts and user, no network. */
  run(imageId: string, argv: string[], timeoutMs: number): Promise<RunResult>;
  /** A host path (data dir, config) as the node's container sees it, through its mounts. */
  containerPath(hostPath: string): Promise<string>;
}

type ContainerDriver = ServiceDriver & { images: ImageRelease };

/**
 * The container drivers are loaded on first use (dynamic import), so a
 * systemd or process host never loads dockerode (issue 17 measures the
 * agent's footprint).
 */
class LazyContainerDriver implements ServiceDriver {
  private loaded: Promise<ContainerDriver> | null = null;
  readonly images: ImageRelease;

  constructor(
    readonly kind: 'docker' | 'compose',
    private readonly config: AgentConfig,
  ) {
    const d = async () => (await this.load()).images;
    this.images = {
      current: async () => (await d()).current(),
      load: async (archive) => (await d()).load(archive),
      pull: async (ref) => (await d()).pull(ref),
      version: async (id) => (await d()).version(id),
      install: async (ctx) => (await d()).install(ctx),
      restore: async (ctx) => (await d()).restore(ctx),
      run: async (image, argv, timeoutMs) => (await d()).run(image, argv, timeoutMs),
      containerPath: async (p) => (await d()).containerPath(p),
    };
  }

  private load(): Promise<ContainerDriver> {
    this.loaded ??=
      this.kind === 'docker'
        ? import('./docker.js').then((m) => new m.DockerDriver(this.config))
        : import('./compose.js').then((m) => new m.ComposeDriver(this.config));
    return this.loaded;
  }

  async exists() {
    return (await this.load()).exists();
  }
  async isActive() {
    return (await this.load()).isActive();
  }
  async start() {
    return (await this.load()).start();
  }
  async stop() {
    return (await this.load()).stop();
  }
  async logTail(lines: number) {
    return (await this.load()).logTail(lines);
  }
  async runsAs() {
    return (await this.load()).runsAs();
  }
}

export function createDriver(config: AgentConfig): ServiceDriver {
  switch (config.service.driver) {
    case 'systemd':
      return new SystemdDriver(config);
    case 'process':
      return new ProcessDriver(config);
    case 'docker':
    case 'compose':
      return new LazyContainerDriver(config.service.driver, config);
  }
}
