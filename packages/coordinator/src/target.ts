/**
 * The target of a rollout: a version, which each agent resolves through its
 * signed release repository (agent config `release`). Agents without one
 * (`allowUnsigned: true`) also need where to download the binary and its
 * sha256, so those two come together or not at all: a URL without a digest
 * could not be checked, a digest without a URL could not be fetched. The API
 * and the CLI share this rule so that both refuse the same requests.
 */
import type { CommandTarget } from '@guts-upgrade/protocol';

/** As the command target the agents are sent (protocol CommandTargetSchema): url and sha256 optional. */
export type RolloutTarget = CommandTarget;

/** The half of the url/sha256 pair a target lacks, or null when it gives both or neither. */
export function missingHalf(t: { url?: string | undefined; sha256?: string | undefined }): 'url' | 'sha256' | null {
  if (t.url !== undefined && t.sha256 === undefined) return 'sha256';
  if (t.sha256 !== undefined && t.url === undefined) return 'url';
  return null;
}

/** Why a target with only one half of the pair is refused, in the caller's names for the two (API fields or CLI flags). */
export function unpairedReason(missing: 'url' | 'sha256', names: Record<'url' | 'sha256', string>, version: string): string {
  const given = missing === 'url' ? 'sha256' : 'url';
  return `${names[given]} without ${names[missing]}: give both (for agents that run with allowUnsigned: true) or neither (each agent resolves ${version} through its signed release repository)`;
}
