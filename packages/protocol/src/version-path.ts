/**
 * The version compatibility matrix, as one pure function both sides use:
 *
 * | path  | example        | migration | downtime | window needed |
 * |-------|----------------|-----------|----------|---------------|
 * | patch | 1.0.1 -> 1.0.2 | none      | no       | no            |
 * | minor | 1.0.x -> 1.1.0 | automatic | no       | no            |
 * | major | 1.x.y -> 2.0.0 | manual    | yes      | yes           |
 *
 * A downgrade is refused unless explicitly allowed; skipping a major version
 * is refused because migrations are written one major at a time.
 */
import semver from 'semver';
import { CodedError } from './errors.js';

export type PathKind = 'patch' | 'minor' | 'major';
export type MigrationKind = 'none' | 'automatic' | 'manual';

export interface UpgradePath {
  from: string;
  to: string;
  kind: PathKind;
  migration: MigrationKind;
  /** The whole network is stopped together (halt strategy). */
  downtime: boolean;
  /** Must run inside an approved maintenance window with explicit approval. */
  requiresWindow: boolean;
  downgrade: boolean;
}

export interface PathOptions {
  allowDowngrade?: boolean;
}

/** Parses a strict semver string (an optional leading "v" is accepted). */
export function parseVersion(input: string): semver.SemVer {
  const v = typeof input === 'string' ? semver.parse(input.trim().replace(/^v(?=\d)/, '')) : null;
  if (!v) throw new CodedError('E_BAD_VERSION', `"${String(input)}" is not a valid semver version`);
  return v;
}

/** Extracts X.Y.Z from `guts-node X.Y.Z` (the real binary's --version output). */
export function parseVersionOutput(output: string): string | null {
  const m = /^guts-node\s+v?(\S+)\s*$/m.exec(output.trim());
  return m && semver.valid(m[1] ?? '') ? (semver.valid(m[1] ?? '') as string) : null;
}

function classify(a: semver.SemVer, b: semver.SemVer): PathKind {
  if (a.major !== b.major) return 'major';
  if (a.minor !== b.minor) return 'minor';
  return 'patch';
}

const RULES: Record<PathKind, Pick<UpgradePath, 'migration' | 'downtime' | 'requiresWindow'>> = {
  patch: { migration: 'none', downtime: false, requiresWindow: false },
  minor: { migration: 'automatic', downtime: false, requiresWindow: false },
  major: { migration: 'manual', downtime: true, requiresWindow: true },
};

/** The path from one version to another, or a CodedError saying why there is none. */
export function upgradePath(fromInput: string, toInput: string, options: PathOptions = {}): UpgradePath {
  const from = parseVersion(fromInput);
  const to = parseVersion(toInput);
  const cmp = semver.compare(to, from);
  if (cmp === 0) {
    throw new CodedError('E_SAME_VERSION', `already at ${from.version}`);
  }
  const downgrade = cmp < 0;
  if (downgrade && !options.allowDowngrade) {
    throw new CodedError(
      'E_DOWNGRADE',
      `${to.version} is older than the running ${from.version}; a deliberate downgrade needs --allow-downgrade on the rollout and release.allowDowngrade on each agent's host`,
    );
  }
  const kind = classify(from, to);
  if (kind === 'major' && Math.abs(to.major - from.major) > 1) {
    throw new CodedError('E_UNSUPPORTED_PATH', `${from.version} -> ${to.version} skips a major version; upgrade one major at a time`);
  }
  // A downgrade never migrates forward: the data of the older version comes
  // back from the backup, which the agent's rollback restores.
  const rule = downgrade ? { ...RULES[kind], migration: 'none' as const } : RULES[kind];
  return { from: from.version, to: to.version, kind, ...rule, downgrade };
}

/** Like upgradePath, but returns the error instead of throwing. */
export function checkUpgradePath(
  from: string,
  to: string,
  options: PathOptions = {},
): { ok: true; path: UpgradePath } | { ok: false; code: CodedError['code']; message: string } {
  try {
    return { ok: true, path: upgradePath(from, to, options) };
  } catch (err) {
    if (err instanceof CodedError) return { ok: false, code: err.code, message: err.message };
    throw err;
  }
}
