/**
 * A TUF repository of guts-node releases on disk, as `guts-upgrade release`
 * writes it:
 *
 *   <dir>/metadata/1.root.json, root.json, targets.json, snapshot.json, timestamp.json
 *   <dir>/targets/guts-node/<version>/guts-node
 *
 * The target is the binary, an image archive (`docker save`, for air-gapped
 * container hosts), or for an image in a registry a small JSON pointer
 * `{"image":"host/name@sha256:..."}` whose reference is also signed into the
 * target's custom fields (`image`): agents on container hosts pull it by digest.
 *
 * <dir> is what a static web server publishes (agents' `release.repository`);
 * the keys live elsewhere (keys.ts). Snapshots are not consistent (no
 * version-prefixed file names): simplest to serve, and safe because each file
 * is replaced by rename, leaves first and timestamp.json last, so a client
 * reads either the old state or the new one; one that reads across the switch
 * fails its hash check (E_RELEASE_INCONSISTENT) and succeeds on its next try.
 *
 * The timestamp pins snapshot.json's length and hashes, and the snapshot pins
 * targets.json's, so every metadata file is bound to the one timestamp.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Metadata, MetadataKind, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp } from '@tufjs/models';
import { parseImageRef, parseVersion, type MigrationKind, type PathKind } from '@guts-upgrade/protocol';
import { ReleaseError } from './errors.js';
import { DEFAULT_EXPIRY, expiresIn } from './expiry.js';
import { generateKey, publicKey, ROLES, signersFor, type RoleName } from './keys.js';

const SPEC_VERSION = '1.0.31';

/** The target name of a guts-node release: what agents ask the repository for. */
export function targetName(version: string): string {
  return `guts-node/${parseVersion(version).version}/guts-node`;
}

/** The custom fields of a release target: what agents check before installing it. */
export interface ReleaseCustom {
  version: string;
  /** The largest jump this release may be installed by: a node more than this far behind is refused. */
  pathKind: PathKind;
  migration: MigrationKind;
  /** The oldest running version this release may be installed over. */
  minFrom?: string;
  /** A release pulled from a registry: the image by digest (host[:port]/name@sha256:<hex>). */
  image?: string;
}

export interface InitOptions {
  dir: string;
  keysDir: string;
  thresholds: Record<RoleName, number>;
  keys: Record<RoleName, number>;
  expires: Partial<Record<RoleName, string>>;
}

export interface AddOptions {
  dir: string;
  keysDir: string;
  /** The file to sign (binary or image archive); or, instead: */
  file?: string;
  /** An image in a registry, by digest: the target is a pointer to it. */
  image?: string;
  version: string;
  pathKind?: PathKind;
  migration?: MigrationKind;
  minFrom?: string;
  expires: Partial<Record<'targets' | 'snapshot' | 'timestamp', string>>;
}

export const metadataDir = (dir: string) => path.join(dir, 'metadata');
export const targetsDir = (dir: string) => path.join(dir, 'targets');
const metaFile = (dir: string, name: string) => path.join(metadataDir(dir), `${name}.json`);

function bytesOf<T extends Root | Targets | Snapshot | Timestamp>(md: Metadata<T>): Buffer {
  return Buffer.from(`${JSON.stringify(md.toJSON(), null, 2)}\n`);
}

function writeAtomic(file: string, data: Buffer): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, data, { mode: 0o644 });
  fs.renameSync(tmp, file);
}

function metaOf(version: number, data: Buffer): MetaFile {
  return new MetaFile({ version, length: data.length, hashes: { sha256: crypto.createHash('sha256').update(data).digest('hex') } });
}

function load<T extends MetadataKind>(dir: string, kind: T) {
  const file = metaFile(dir, kind);
  if (!fs.existsSync(file))
    throw new ReleaseError(
      'E_RELEASE_REPO',
      `${file} is missing: ${dir} is not a release repository (create one with \`guts-upgrade release init --dir ${dir}\`)`,
    );
  try {
    return Metadata.fromJSON(kind as MetadataKind.Root, JSON.parse(fs.readFileSync(file, 'utf8'))) as unknown as Metadata<
      T extends MetadataKind.Root ? Root : T extends MetadataKind.Targets ? Targets : T extends MetadataKind.Snapshot ? Snapshot : Timestamp
    >;
  } catch (err) {
    throw new ReleaseError('E_RELEASE_REPO', `${file} is not valid TUF metadata: ${(err as Error).message}`);
  }
}

/** Signs with the threshold's worth of keys the root lists for the role, replacing old signatures. */
function sign<T extends Root | Targets | Snapshot | Timestamp>(md: Metadata<T>, root: Root, role: RoleName, keysDir: string): void {
  const r = root.roles[role];
  if (!r) throw new ReleaseError('E_RELEASE_REPO', `root.json has no ${role} role`);
  md.signatures = {};
  for (const s of signersFor(keysDir, role, r.keyIDs, r.threshold)) md.sign((d) => s.sign(d), true);
}

/** New snapshot and timestamp over the current targets.json bytes, then written leaves-first. */
function publish(o: { dir: string; keysDir: string; root: Root; targets?: Buffer; expires: Partial<Record<'snapshot' | 'timestamp', string>> }): {
  snapshot: number;
  timestamp: number;
} {
  const targetsBytes = o.targets ?? fs.readFileSync(metaFile(o.dir, 'targets'));
  const targetsVersion = (JSON.parse(targetsBytes.toString()) as { signed: { version: number } }).signed.version;
  const oldSnap = fs.existsSync(metaFile(o.dir, 'snapshot')) ? load(o.dir, MetadataKind.Snapshot).signed.version : 0;
  const oldTs = fs.existsSync(metaFile(o.dir, 'timestamp')) ? load(o.dir, MetadataKind.Timestamp).signed.version : 0;
  const snap = new Metadata(
    new Snapshot({
      version: oldSnap + 1,
      specVersion: SPEC_VERSION,
      expires: expiresIn(o.expires.snapshot ?? DEFAULT_EXPIRY.snapshot),
      meta: { 'targets.json': metaOf(targetsVersion, targetsBytes) },
    }),
  );
  sign(snap, o.root, 'snapshot', o.keysDir);
  const snapBytes = bytesOf(snap);
  const ts = new Metadata(
    new Timestamp({
      version: oldTs + 1,
      specVersion: SPEC_VERSION,
      expires: expiresIn(o.expires.timestamp ?? DEFAULT_EXPIRY.timestamp),
      snapshotMeta: metaOf(oldSnap + 1, snapBytes),
    }),
  );
  sign(ts, o.root, 'timestamp', o.keysDir);
  // Everything is signed before the first write: a missing key leaves the repository as it was.
  if (o.targets) writeAtomic(metaFile(o.dir, 'targets'), o.targets);
  writeAtomic(metaFile(o.dir, 'snapshot'), snapBytes);
  writeAtomic(metaFile(o.dir, 'timestamp'), bytesOf(ts));
  return { snapshot: oldSnap + 1, timestamp: oldTs + 1 };
}

/** A new repository: keys for every role, root v1, empty targets, snapshot and timestamp. */
export function initRepo(o: InitOptions): { keyIds: Record<RoleName, string[]> } {
  if (fs.existsSync(metadataDir(o.dir))) throw new ReleaseError('E_RELEASE_REPO', `${metadataDir(o.dir)} exists already; pick an empty --dir`);
  const rel = path.relative(path.resolve(o.dir), path.resolve(o.keysDir));
  if (rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel))) {
    throw new ReleaseError('E_RELEASE_USAGE', `--keys-dir ${o.keysDir} is inside --dir ${o.dir}, which is published as is: keep the keys outside it`);
  }
  for (const role of ROLES) {
    if (fs.existsSync(path.join(o.keysDir, role)) && fs.readdirSync(path.join(o.keysDir, role)).length > 0) {
      throw new ReleaseError('E_RELEASE_KEYS', `${path.join(o.keysDir, role)} already holds keys; pick another --keys-dir`);
    }
  }
  fs.mkdirSync(o.keysDir, { recursive: true, mode: 0o700 });
  const keys: Record<string, unknown> = {};
  const roles: Record<string, unknown> = {};
  const keyIds = {} as Record<RoleName, string[]>;
  for (const role of ROLES) {
    keyIds[role] = [];
    for (let i = 0; i < o.keys[role]; i++) {
      const k = generateKey(o.keysDir, role);
      keys[k.keyid] = publicKey(k).toJSON();
      keyIds[role].push(k.keyid);
    }
    roles[role] = { keyids: keyIds[role], threshold: o.thresholds[role] };
  }
  // From its JSON form: the models export no Role class to build the roles with.
  const root = Root.fromJSON({
    _type: 'root',
    spec_version: SPEC_VERSION,
    version: 1,
    expires: expiresIn(o.expires.root ?? DEFAULT_EXPIRY.root),
    consistent_snapshot: false,
    keys,
    roles,
  } as Parameters<typeof Root.fromJSON>[0]);
  const rootMd = new Metadata(root);
  sign(rootMd, root, 'root', o.keysDir);
  const targets = new Metadata(new Targets({ version: 1, specVersion: SPEC_VERSION, expires: expiresIn(o.expires.targets ?? DEFAULT_EXPIRY.targets) }));
  sign(targets, root, 'targets', o.keysDir);
  fs.mkdirSync(metadataDir(o.dir), { recursive: true });
  fs.mkdirSync(targetsDir(o.dir), { recursive: true });
  const rootBytes = bytesOf(rootMd);
  // 1.root.json is what an agent walking root versions asks for; root.json is what it pins.
  writeAtomic(metaFile(o.dir, '1.root'), rootBytes);
  writeAtomic(metaFile(o.dir, 'root'), rootBytes);
  publish({ dir: o.dir, keysDir: o.keysDir, root, targets: bytesOf(targets), expires: o.expires });
  return { keyIds };
}

/** Default path kind: the jump the version itself suggests (x.0.0 major, x.y.0 minor, else patch). */
function defaultPathKind(version: string): PathKind {
  const v = parseVersion(version);
  if (v.minor === 0 && v.patch === 0) return 'major';
  return v.patch === 0 ? 'minor' : 'patch';
}

/** Adds (or replaces) a release: copies the file, signs targets, snapshot and timestamp. */
export function addRelease(o: AddOptions): {
  name: string;
  length: number;
  sha256: string;
  sha512: string;
  custom: ReleaseCustom;
  versions: Record<string, number>;
} {
  const image = releaseImage(o);
  const root = load(o.dir, MetadataKind.Root).signed;
  const targets = load(o.dir, MetadataKind.Targets);
  if (image === null && (!fs.existsSync(o.file!) || !fs.statSync(o.file!).isFile()))
    throw new ReleaseError('E_RELEASE_USAGE', `--file ${o.file} is not a file`);
  const version = parseVersion(o.version).version;
  const pathKind = o.pathKind ?? defaultPathKind(version);
  const custom: ReleaseCustom = { version, pathKind, migration: o.migration ?? MIGRATION_OF[pathKind] };
  if (o.minFrom !== undefined) custom.minFrom = parseVersion(o.minFrom).version;
  if (image !== null) custom.image = image;
  const data = image === null ? fs.readFileSync(o.file!) : Buffer.from(`${JSON.stringify({ image })}\n`);
  const sha256 = crypto.createHash('sha256').update(data).digest('hex');
  const sha512 = crypto.createHash('sha512').update(data).digest('hex');
  const name = targetName(version);
  const signed = targets.signed;
  const next = new Metadata(
    new Targets({
      version: signed.version + 1,
      specVersion: signed.specVersion,
      expires: expiresIn(o.expires.targets ?? DEFAULT_EXPIRY.targets),
      targets: {
        ...signed.targets,
        [name]: new TargetFile({ path: name, length: data.length, hashes: { sha256, sha512 }, unrecognizedFields: { custom: { ...custom } } }),
      },
    }),
  );
  sign(next, root, 'targets', o.keysDir);
  // The online keys too, before the file lands: a missing one must leave the repository as it was.
  for (const role of ['snapshot', 'timestamp'] as const) signersFor(o.keysDir, role, root.roles[role]?.keyIDs ?? [], root.roles[role]?.threshold ?? 1);
  const dest = path.join(targetsDir(o.dir), name);
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  const tmp = `${dest}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, data, { mode: 0o644 });
  // The file lands before the metadata naming it, so no published state points at a missing file.
  fs.renameSync(tmp, dest);
  const v = publish({ dir: o.dir, keysDir: o.keysDir, root, targets: bytesOf(next), expires: o.expires });
  return { name, length: data.length, sha256, sha512, custom, versions: { targets: signed.version + 1, ...v } };
}

/**
 * The image reference of a registry release, null for a file; exactly one of
 * the two, and the reference by digest with its registry host (image-ref.ts).
 */
function releaseImage(o: { file?: string | undefined; image?: string | undefined }): string | null {
  if (o.file !== undefined && o.image !== undefined) {
    throw new ReleaseError('E_RELEASE_USAGE', '--file and --image both given: a release is one file or one registry image');
  }
  if (o.file === undefined && o.image === undefined) {
    throw new ReleaseError('E_RELEASE_USAGE', 'give --file (a binary or an image archive) or --image (host[:port]/name@sha256:<hex>)');
  }
  if (o.image === undefined) return null;
  try {
    return parseImageRef(o.image).ref;
  } catch (err) {
    throw new ReleaseError('E_RELEASE_USAGE', `--image ${(err as Error).message}`);
  }
}

/** The migration a path of each kind takes (version-path.ts), unless the release owner says otherwise. */
const MIGRATION_OF: Record<PathKind, MigrationKind> = { patch: 'none', minor: 'automatic', major: 'manual' };

/** A fresh timestamp over the current snapshot: what a cron job runs before the last one expires. */
export function refreshTimestamp(o: { dir: string; keysDir: string; expires?: string }): { version: number; expires: string } {
  const root = load(o.dir, MetadataKind.Root).signed;
  const old = load(o.dir, MetadataKind.Timestamp).signed;
  const snapBytes = fs.readFileSync(metaFile(o.dir, 'snapshot'));
  const expires = expiresIn(o.expires ?? DEFAULT_EXPIRY.timestamp);
  const ts = new Metadata(
    new Timestamp({ version: old.version + 1, specVersion: old.specVersion, expires, snapshotMeta: metaOf(old.snapshotMeta.version, snapBytes) }),
  );
  sign(ts, root, 'timestamp', o.keysDir);
  writeAtomic(metaFile(o.dir, 'timestamp'), bytesOf(ts));
  return { version: old.version + 1, expires };
}
