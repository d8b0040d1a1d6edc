/**
 * `guts-upgrade release ...`: the release owner's offline tool. It writes a TUF
 * repository (repo.ts) that agents with `release` configured resolve versions
 * through, so a compromised coordinator cannot make them install anything the
 * release keys did not sign. It never talks to a coordinator.
 */
import path from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { asArgParser, parseVersion, positiveIntArg, type MigrationKind, type PathKind } from '@guts-upgrade/protocol';
import { ReleaseError } from './errors.js';
import { DEFAULT_EXPIRY, parseLifetime } from './expiry.js';
import { ROLES, type RoleName } from './keys.js';
import { addRelease, initRepo, refreshTimestamp } from './repo.js';

const positiveInt = asArgParser(positiveIntArg, InvalidArgumentError);
const lifetime = asArgParser((v) => {
  try {
    parseLifetime(v);
  } catch (err) {
    throw new Error((err as ReleaseError).detail);
  }
  return v;
}, InvalidArgumentError);
const version = asArgParser((v) => parseVersion(v).version, InvalidArgumentError);

export interface ReleaseIo {
  out(s: string): void;
}

/** Where the keys go unless --keys-dir says: beside the repository, never in it (it is published). */
function keysDirOf(dir: string, given?: string): string {
  return given ?? `${path.resolve(dir)}-keys`;
}

const withKeysDir = (cmd: Command) =>
  cmd
    .requiredOption('--dir <dir>', 'the repository directory (what the web server publishes)')
    .option('--keys-dir <dir>', 'the signing keys, one subdirectory per role (default: <dir>-keys)');

export function addReleaseCommands(program: Command, io: ReleaseIo, json: () => boolean): void {
  const release = program
    .command('release')
    .description('offline: sign guts-node releases into a TUF repository that agents with `release` configured install from');
  const show = (v: unknown, text: string) => io.out(`${json() ? JSON.stringify(v, null, 2) : text}\n`);

  const init = withKeysDir(release.command('init').description('create a repository: ed25519 keys per role, root, targets, snapshot and timestamp'));
  for (const role of ROLES) {
    init.option(`--threshold-${role} <n>`, `signatures the ${role} role needs (default 1)`, positiveInt);
    init.option(`--expires-${role} <lifetime>`, `lifetime of ${role} metadata: h, d, w, mo or y (default ${DEFAULT_EXPIRY[role]})`, lifetime);
  }
  init.option('--keys <n>', 'keys generated per role (default: its threshold)', positiveInt).action((o: Record<string, unknown>) => {
    const thresholds = {} as Record<RoleName, number>;
    const keys = {} as Record<RoleName, number>;
    const expires: Partial<Record<RoleName, string>> = {};
    for (const role of ROLES) {
      const cap = role[0]!.toUpperCase() + role.slice(1);
      thresholds[role] = (o[`threshold${cap}`] as number | undefined) ?? 1;
      keys[role] = (o.keys as number | undefined) ?? thresholds[role];
      if (keys[role] < thresholds[role]) {
        throw new ReleaseError('E_RELEASE_USAGE', `--keys ${keys[role]} is below --threshold-${role} ${thresholds[role]}: the role could never be signed`);
      }
      const e = o[`expires${cap}`] as string | undefined;
      if (e) expires[role] = e;
    }
    const dir = o.dir as string;
    const keysDir = keysDirOf(dir, o.keysDir as string | undefined);
    const r = initRepo({ dir, keysDir, thresholds, keys, expires });
    show(
      { dir, keysDir, root: path.join(dir, 'metadata', 'root.json'), thresholds, keyIds: r.keyIds },
      [
        `created the release repository in ${dir} (publish it as is; agents' release.repository is its URL)`,
        `keys in ${keysDir}: move ${path.join(keysDir, 'root')} and ${path.join(keysDir, 'targets')} offline; snapshot and timestamp stay online`,
        `pin ${path.join(dir, 'metadata', 'root.json')} on every agent (release.root)`,
      ].join('\n'),
    );
  });

  withKeysDir(
    release.command('add').description('sign a guts-node release: copies the file (or a pointer to the registry image), signs targets, snapshot and timestamp'),
  )
    .option('--file <path>', 'the guts-node binary, or the image archive (docker save) for container hosts')
    .option('--image <ref>', 'instead of --file: the image in a registry, by digest (host[:port]/name@sha256:<hex>), for container hosts')
    .requiredOption('--version <version>', 'its version (semver); the target is guts-node/<version>/guts-node', version)
    .addOption(new Option('--path-kind <kind>', 'the largest jump it may be installed by (default: from the version)').choices(['patch', 'minor', 'major']))
    .addOption(new Option('--migration <kind>', 'the migration it needs (default: from the path kind)').choices(['none', 'automatic', 'manual']))
    .option('--min-from <version>', 'the oldest running version it may be installed over', version)
    .option('--expires-targets <lifetime>', `lifetime of the new targets metadata (default ${DEFAULT_EXPIRY.targets})`, lifetime)
    .option('--expires-snapshot <lifetime>', `(default ${DEFAULT_EXPIRY.snapshot})`, lifetime)
    .option('--expires-timestamp <lifetime>', `(default ${DEFAULT_EXPIRY.timestamp})`, lifetime)
    .action((o: Record<string, string | undefined>) => {
      const dir = o.dir!;
      // addRelease checks --file/--image before anything is read or written: a usage error changes nothing.
      const r = addRelease({
        dir,
        keysDir: keysDirOf(dir, o.keysDir),
        ...(o.file !== undefined ? { file: o.file } : {}),
        ...(o.image !== undefined ? { image: o.image } : {}),
        version: o.version!,
        ...(o.pathKind ? { pathKind: o.pathKind as PathKind } : {}),
        ...(o.migration ? { migration: o.migration as MigrationKind } : {}),
        ...(o.minFrom ? { minFrom: o.minFrom } : {}),
        expires: {
          ...(o.expiresTargets ? { targets: o.expiresTargets } : {}),
          ...(o.expiresSnapshot ? { snapshot: o.expiresSnapshot } : {}),
          ...(o.expiresTimestamp ? { timestamp: o.expiresTimestamp } : {}),
        },
      });
      show(
        r,
        `signed ${r.name}: ${r.custom.image ? `image ${r.custom.image}` : `${r.length} bytes, sha256 ${r.sha256}`}, path kind ${r.custom.pathKind}, migration ${r.custom.migration}${r.custom.minFrom ? `, from ${r.custom.minFrom} on` : ''} (targets v${r.versions.targets}, snapshot v${r.versions.snapshot}, timestamp v${r.versions.timestamp})`,
      );
    });

  withKeysDir(release.command('timestamp').description('re-sign the timestamp before it expires (run it from cron, more often than --expires)'))
    .option('--expires <lifetime>', `lifetime of the new timestamp (default ${DEFAULT_EXPIRY.timestamp})`, lifetime)
    .action((o: Record<string, string | undefined>) => {
      const r = refreshTimestamp({ dir: o.dir!, keysDir: keysDirOf(o.dir!, o.keysDir), ...(o.expires ? { expires: o.expires } : {}) });
      show(r, `timestamp v${r.version}, expires ${r.expires}`);
    });
}
