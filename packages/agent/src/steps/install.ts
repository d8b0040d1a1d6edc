import fs from 'node:fs';
import { CodedError } from '@guts-upgrade/protocol';
import { copyFileAtomic, sha256File } from '../util.js';
import type { StepContext } from './context.js';

export function bakPath(binary: string): string {
  return `${binary}.bak`;
}

/**
 * Keeps the old binary as guts-node.bak and swaps the new one in by rename,
 * so the configured path always holds a complete binary (old or new).
 * Idempotent: a re-run never overwrites .bak with the new binary.
 */
export async function install(ctx: StepContext): Promise<void> {
  // A container host's release is an image: the driver recreates the container on it.
  if (ctx.driver.images) return ctx.driver.images.install(ctx);
  const binary = ctx.config.node.binary;
  const bak = bakPath(binary);
  const want = ctx.data.artifactSha256 ?? (ctx.command.kind !== 'rollback' ? (ctx.command.target.sha256 ?? '') : '');
  try {
    const current = await sha256File(binary);
    if (current === ctx.data.oldBinarySha) copyFileAtomic(binary, bak, 0o755);
    else if (current === want) {
      ctx.progress('install', 'running', 'new binary already installed');
      return;
    }
    copyFileAtomic(ctx.data.artifactFile!, binary, 0o755);
  } catch (err) {
    throw new CodedError('E_INSTALL', `cannot install ${binary}: ${(err as Error).message}`);
  }
  const now = await sha256File(binary);
  if (now !== want) throw new CodedError('E_INSTALL', `installed ${binary} has sha256 ${now}, expected ${want}`);
  if ((fs.statSync(binary).mode & 0o777) !== 0o755) fs.chmodSync(binary, 0o755);
}
