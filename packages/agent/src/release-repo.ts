/**
 * Resolves a guts-node version through the release repository (The Update
 * Framework, via tuf-js): refresh the metadata from the pinned root, look up
 * `guts-node/<version>/guts-node`, check the release's own policy fields, and
 * download it into staging verified against the signed length and hashes.
 *
 * Why TUF rather than the coordinator's url + sha256: a compromised
 * coordinator (or whoever can write to it) could name any binary and its
 * digest. Here only the release keys decide what a version is, and TUF's
 * metadata also defeats what a signature over one digest cannot: rollback to
 * old metadata, freeze on stale metadata, mix-and-match of repository states,
 * endless data, and a single compromised key below a role's threshold.
 *
 * Every tuf-js failure becomes one named code (E_RELEASE_*); its own words,
 * which may carry digests of what the remote sent, stay in the agent's log.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Updater } from 'tuf-js';
import { CodedError, parseImageRef, parseVersion, upgradePath, type ErrorCode, type MigrationKind, type PathKind } from '@guts-upgrade/protocol';
import type { AgentConfig } from './config.js';
import { fsyncPath } from './util.js';

/** The custom fields `guts-upgrade release add` signs into each target. */
export interface ReleaseCustom {
  version: string;
  pathKind: PathKind;
  migration: MigrationKind;
  minFrom?: string;
  /**
   * A registry release for container hosts (`release add --image`): the image
   * by digest; the target file is then a JSON pointer {"image": <the same>}.
   */
  image?: string;
}

export interface ResolvedRelease {
  name: string;
  length: number;
  sha256: string;
  custom: ReleaseCustom;
}

export function releaseTargetName(version: string): string {
  return `guts-node/${parseVersion(version).version}/guts-node`;
}

const RANK: Record<PathKind, number> = { patch: 0, minor: 1, major: 2 };
const PATH_KINDS = Object.keys(RANK);
const MIGRATIONS = ['none', 'automatic', 'manual'];

/** The target's custom fields, or E_RELEASE_INVALID when they are not what the release tool writes. */
export function parseCustom(name: string, version: string, raw: unknown): ReleaseCustom {
  const c = (raw ?? {}) as Record<string, unknown>;
  const ok =
    typeof c.version === 'string' &&
    c.version === parseVersion(version).version &&
    PATH_KINDS.includes(c.pathKind as string) &&
    MIGRATIONS.includes(c.migration as string) &&
    (c.minFrom === undefined || typeof c.minFrom === 'string');
  if (!ok)
    throw new CodedError(
      'E_RELEASE_INVALID',
      `the signed target ${name} lacks valid custom fields (version, pathKind, migration, minFrom); sign it with \`guts-upgrade release add\``,
    );
  if (c.image !== undefined) {
    // Refused before anything is pulled: a tag names whatever the registry serves under it today, not what was signed.
    let why: string | null = typeof c.image === 'string' ? null : 'it is not a string';
    try {
      if (why === null) parseImageRef(c.image as string);
    } catch (err) {
      why = (err as Error).message;
    }
    if (why !== null) {
      throw new CodedError(
        'E_RELEASE_INVALID',
        `the signed target ${name} names an image the agent will not pull (${why}); the release owner signs images by digest with \`guts-upgrade release add --image\`. Nothing was pulled or changed`,
      );
    }
  }
  return c as unknown as ReleaseCustom;
}

/** The image a registry release's pointer file names; E_RELEASE_INVALID unless it is the one its custom fields sign. */
export function readImagePointer(name: string, file: string, signed: string): string {
  let image: unknown;
  try {
    image = (JSON.parse(fs.readFileSync(file, 'utf8')) as { image?: unknown }).image;
  } catch {
    image = undefined;
  }
  if (image !== signed) {
    throw new CodedError('E_RELEASE_INVALID', `the signed target ${name} is not a pointer to the image its custom fields name (${signed}); nothing was pulled`);
  }
  return signed;
}

/**
 * The release's own policy against the running version: the jump may be no
 * larger than its path kind, the node must run at least its min-from, and a
 * downgrade needs this host's `release.allowDowngrade` (never a coordinator flag).
 */
export function checkReleasePolicy(custom: ReleaseCustom, from: string, allowDowngrade: boolean): void {
  const p = upgradePath(from, custom.version, { allowDowngrade: true });
  if (p.downgrade) {
    if (!allowDowngrade) {
      throw new CodedError(
        'E_RELEASE_POLICY',
        `${p.to} is older than the running ${p.from}, and release.allowDowngrade is not set on this host; nothing was changed`,
      );
    }
    return;
  }
  if (RANK[p.kind] > RANK[custom.pathKind]) {
    throw new CodedError(
      'E_RELEASE_POLICY',
      `${p.from} -> ${p.to} is a ${p.kind} jump and the signed release allows at most ${custom.pathKind}; upgrade through an intermediate release first. Nothing was changed`,
    );
  }
  if (custom.minFrom !== undefined && parseVersion(from).compare(parseVersion(custom.minFrom)) < 0) {
    throw new CodedError(
      'E_RELEASE_POLICY',
      `${p.to} may be installed over ${custom.minFrom} or later only, and the node runs ${p.from}; upgrade to ${custom.minFrom} first. Nothing was changed`,
    );
  }
}

type Stage = 'metadata' | 'target';

/** The named code of a tuf-js failure. tuf-js wraps snapshot and targets failures in a RuntimeError, so the words decide, not the class. */
export function releaseErrorCode(err: unknown, stage: Stage): ErrorCode {
  const m = `${(err as Error)?.name ?? ''} ${(err as Error)?.message ?? String(err)}`;
  if (/was signed by \d+\/\d+ keys|failed to verify .* signature|no signature for key|UnsignedMetadataError/.test(m)) return 'E_RELEASE_SIGNATURE';
  if (/is expired/.test(m)) return 'E_RELEASE_EXPIRED';
  if (/is less than current version/.test(m)) return 'E_RELEASE_ROLLBACK';
  if (/Max length reached/.test(m)) return 'E_RELEASE_TAMPERED';
  if (/Expected (length|hash)|does not match snapshot version|doesn't match timestamp|Missing .*snapshot/.test(m)) {
    return stage === 'target' ? 'E_RELEASE_TAMPERED' : 'E_RELEASE_INCONSISTENT';
  }
  if (/Failed to download/.test(m)) return 'E_RELEASE_UNREACHABLE';
  return 'E_RELEASE_INVALID';
}

const WHAT: Partial<Record<ErrorCode, string>> = {
  E_RELEASE_SIGNATURE: 'is not signed by enough keys of its role (bad signature or below threshold)',
  E_RELEASE_EXPIRED: 'has expired (a frozen repository, or the release owner has not refreshed the timestamp)',
  E_RELEASE_ROLLBACK: 'is older than the metadata this agent already trusts (rollback)',
  E_RELEASE_TAMPERED: 'does not match the length or hashes its signed metadata gives',
  E_RELEASE_INCONSISTENT: 'does not match what the signed timestamp/snapshot says (mixed repository states)',
  E_RELEASE_UNREACHABLE: 'could not be downloaded from the repository',
  E_RELEASE_INVALID: 'could not be read as TUF metadata',
};

function failure(err: unknown, stage: Stage, repository: string, log: Logger, what: string): CodedError {
  if (err instanceof CodedError) return err;
  const code = releaseErrorCode(err, stage);
  log.warn({ err: (err as Error)?.message, repository, stage }, 'release repository refused');
  const subject = stage === 'target' ? `the release file ${what}` : `the release metadata of ${repository}`;
  return new CodedError(code, `${subject} ${WHAT[code] ?? 'was refused'}; nothing was installed (the agent's log has tuf-js's words)`);
}

/** The metadata dir tuf-js works in, seeded with the pinned root on first use (later roots are walked to from it). */
function metadataDir(config: AgentConfig): string {
  const dir = path.join(config.release.cacheDir, 'metadata');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const trusted = path.join(dir, 'root.json');
  if (!fs.existsSync(trusted)) {
    try {
      fs.copyFileSync(config.release.root!, trusted);
    } catch (err) {
      throw new CodedError('E_RELEASE_INVALID', `cannot read the pinned root ${config.release.root}: ${(err as Error).message}`);
    }
  }
  return dir;
}

export class ReleaseRepo {
  private constructor(
    private readonly config: AgentConfig,
    private readonly log: Logger,
    private readonly updater: Updater,
  ) {}

  /**
   * tuf-js and the fetcher on top of it are loaded here, when a release is
   * resolved, not when the agent starts: they are about a third of the start-up
   * time of every agent process (daemon and CLI alike).
   */
  static async open(config: AgentConfig, log: Logger): Promise<ReleaseRepo> {
    const repo = config.release.repository;
    if (!repo || !config.release.root) throw new CodedError('E_CONFIG', 'config release.repository and release.root: both are needed to resolve releases');
    // tuf-js is CommonJS: its module.exports is the import's default under Node and in the packaged
    // bundle's chunk alike, while the named exports differ between the two loaders.
    const [tuf, { BoundedFetcher }] = await Promise.all([import('tuf-js'), import('./release-fetcher.js')]);
    const { Updater } = tuf.default;
    const fetcher = new BoundedFetcher(path.join(config.release.cacheDir, 'tmp'), config.fetch, (url, detail) =>
      log.warn({ url, detail }, 'release download failed'),
    );
    try {
      return new ReleaseRepo(
        config,
        log,
        new Updater({ metadataDir: metadataDir(config), metadataBaseUrl: `${repo}/metadata`, targetBaseUrl: `${repo}/targets`, fetcher }),
      );
    } catch (err) {
      throw failure(err, 'metadata', repo, log, '');
    }
  }

  /** Refreshes the metadata and returns the signed target of `version`, policy unchecked. */
  async resolve(version: string): Promise<ResolvedRelease & { info: Awaited<ReturnType<Updater['getTargetInfo']>> }> {
    const repo = this.config.release.repository!;
    const name = releaseTargetName(version);
    let info: Awaited<ReturnType<Updater['getTargetInfo']>>;
    try {
      await this.updater.refresh();
      info = await this.updater.getTargetInfo(name);
    } catch (err) {
      throw failure(err, 'metadata', repo, this.log, name);
    }
    if (!info) throw new CodedError('E_RELEASE_UNKNOWN', `the release repository ${repo} signs no ${name}; nothing was installed`);
    const sha256 = info.hashes.sha256;
    if (!sha256 || !/^[0-9a-f]{64}$/.test(sha256)) throw new CodedError('E_RELEASE_INVALID', `the signed target ${name} carries no sha256`);
    return { name, length: info.length, sha256, custom: parseCustom(name, version, info.custom), info };
  }

  /** Downloads the resolved target to `dest` (verified before it lands there, renamed into place). */
  async download(r: Awaited<ReturnType<ReleaseRepo['resolve']>>, dest: string): Promise<void> {
    const partial = `${dest}.partial`;
    fs.rmSync(partial, { force: true });
    try {
      await this.updater.downloadTarget(r.info!, partial);
    } catch (err) {
      fs.rmSync(partial, { force: true });
      throw failure(err, 'target', this.config.release.repository!, this.log, r.name);
    }
    fs.chmodSync(partial, 0o755);
    fsyncPath(partial);
    fs.renameSync(partial, dest);
    fsyncPath(path.dirname(dest));
  }
}
