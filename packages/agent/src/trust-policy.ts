/**
 * What this host lets a command install, decided from the agent's own
 * configuration and never from flags in a command: the coordinator (or
 * whoever speaks for it) can ask for a version, not for less checking.
 *
 * - Signed or nothing: without a trusted root (release.repository and its
 *   pinned release.root) nothing is installed unless `allowUnsigned: true`.
 * - Downgrades: `release.allowDowngrade` on this host.
 * - Majors: with a repository, the signed path kind (checked when the release
 *   is resolved, release-repo.ts); without one, `release.allowMajor`.
 */
import { CodedError, type UpgradePath } from '@guts-upgrade/protocol';
import type { AgentConfig } from './config.js';

export function hasTrustedRoot(config: AgentConfig): boolean {
  return config.release.repository !== null && config.release.root !== null;
}

/** The warning an agent logs at start and before every command while it accepts unsigned releases; null when it does not. */
export function unsignedWarning(config: AgentConfig): string | null {
  if (hasTrustedRoot(config) || !config.allowUnsigned) return null;
  return 'allowUnsigned is set and no release repository is configured: this agent installs, as root, whatever binary a command names by url and sha256. Configure release.repository and release.root (docs/runbook.md)';
}

/** Refuses a prepare/upgrade on a host that has neither a trusted root nor allowUnsigned; nothing has been touched yet. */
export function requireTrustedSource(config: AgentConfig, version: string): void {
  if (hasTrustedRoot(config) || config.allowUnsigned) return;
  throw new CodedError(
    'E_UNSIGNED_REFUSED',
    `guts-node ${version} was not installed: this agent has no trusted root (config release.repository and release.root) and allowUnsigned is not set; nothing was changed`,
  );
}

/** The local policy on the size and direction of the jump; the signed path kind is checked where the release is resolved. */
export function checkLocalPathPolicy(config: AgentConfig, path: UpgradePath): void {
  if (path.kind !== 'major' || path.downgrade || hasTrustedRoot(config) || config.release.allowMajor) return;
  throw new CodedError(
    'E_MAJOR_NOT_APPROVED',
    `${path.from} -> ${path.to} is a major upgrade and this host has no release repository whose signed path kind could allow it; set release.allowMajor in the agent configuration to allow it here. Nothing was changed`,
  );
}
