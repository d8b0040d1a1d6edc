/**
 * The image side of a container host, the same for the docker and compose
 * drivers once they can say which container runs the node: what it runs,
 * loading or pulling and checking a release image, and one-shot commands beside it.
 */
import type Docker from 'dockerode';
import { CodedError } from '@guts-upgrade/protocol';
import type { StepContext } from '../steps/context.js';
import type { ImageRelease } from './driver.js';
import { imageVersion, loadArchive, mapToContainer, oneShotOptions, pullImage, runOnce } from './engine.js';

export function imageReleaseOf(
  docker: Docker,
  inspect: () => Promise<Docker.ContainerInspectInfo | null>,
  what: string,
  swap: { install(ctx: StepContext): Promise<void>; restore(ctx: StepContext): Promise<void> },
): ImageRelease {
  const must = async () => {
    const info = await inspect();
    if (!info) throw new CodedError('E_SERVICE_MISSING', `${what} does not exist`);
    return info;
  };
  return {
    current: async () => {
      const info = await must();
      return { imageId: info.Image, ...(await imageVersion(docker, info.Image)) };
    },
    load: (archive) => loadArchive(docker, archive),
    pull: (ref) => pullImage(docker, ref),
    version: (id) => imageVersion(docker, id),
    install: swap.install,
    restore: swap.restore,
    run: async (imageId, argv, timeoutMs) => runOnce(docker, oneShotOptions(imageId, argv, await must()), timeoutMs),
    containerPath: async (p) => mapToContainer(p, (await inspect())?.Mounts ?? []),
  };
}
