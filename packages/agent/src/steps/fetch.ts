/**
 * Download, checksum, signature and --version check of the artifact, while the
 * node keeps running. Artifacts are content addressed in the staging dir
 * (<stagingDir>/<sha256>), so a prepared artifact is reused by the upgrade and
 * a repeated fetch is a no-op.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CodedError, verifyArtifactDigest, type Artifact } from '@guts-upgrade/protocol';
import { DownloadError, MAX_REDIRECTS, download } from '../download.js';
import type { AgentConfig } from '../config.js';
import { fsyncPath, sha256File, sleep } from '../util.js';
import { checkReleasePolicy, readImagePointer, ReleaseRepo, type ReleaseCustom } from '../release-repo.js';
import { requireTrustedSource } from '../trust-policy.js';
import type { ImageRelease } from '../service/driver.js';
import { addCheck, type StepContext } from './context.js';
import { binaryVersion } from './preflight.js';

export function stagedPath(stagingDir: string, sha256: string): string {
  return path.join(stagingDir, sha256);
}

export async function fetchArtifact(ctx: StepContext): Promise<void> {
  const { config, command } = ctx;
  if (command.kind === 'rollback') throw new CodedError('E_INTERNAL', 'fetch is for prepare/upgrade');
  const target = command.target;
  requireTrustedSource(config, target.version); // preflight checked it too; a fetch never runs without it
  let final: string;
  let image: string | undefined;
  if (config.release.repository !== null) {
    ({ file: final, image } = await fetchRelease(ctx));
  } else {
    if (!target.url || !target.sha256) {
      throw new CodedError(
        'E_BAD_MESSAGE',
        `${target.version} comes without url and sha256, and no release repository is configured (config release.repository)`,
      );
    }
    final = await fetchByUrl(ctx, { ...target, url: target.url, sha256: target.sha256 });
  }
  if (image === undefined) fs.chmodSync(final, 0o755);
  // A container host's release is an image: pulled by digest from a registry, or an archive loaded into the engine; checked, then run there.
  const images = ctx.driver.images;
  const newImage = images ? await (image !== undefined ? pullImage(ctx, images, image) : loadImage(ctx, images, final)) : undefined;
  // The first run of a file fetched from the network: not as root (in a container: nobody, no network).
  const v = images ? await images.version(newImage!) : await binaryVersion(final, 60_000, (await ctx.identities()).node);
  const ok = v.version === (await normalized(target.version));
  addCheck(ctx, 'artifact-version', ok, `--version printed ${JSON.stringify(v.output.slice(0, 200))}`);
  if (!ok) {
    fs.rmSync(final, { force: true });
    throw new CodedError('E_VERSION_MISMATCH', `the artifact's --version says ${JSON.stringify(v.output.slice(0, 200))}, expected guts-node ${target.version}`);
  }
  ctx.save({ artifactFile: final, ...(newImage ? { newImage } : {}) });
}

async function loadImage(ctx: StepContext, images: ImageRelease, archive: string): Promise<string> {
  const id = await images.load(archive);
  addCheck(ctx, 'image', true, `loaded ${id}, the image id the signed archive's manifest names`);
  ctx.progress('fetch', 'running', `loaded image ${id}`);
  return id;
}

async function pullImage(ctx: StepContext, images: ImageRelease, ref: string): Promise<string> {
  ctx.progress('fetch', 'running', `pulling ${ref}`);
  const { id, pulled } = await images.pull(ref);
  addCheck(
    ctx,
    'image',
    true,
    pulled ? `pulled ${ref}: image ${id}, with the digest the signed release names` : `${ref} already in the engine (image ${id}): not pulled again`,
  );
  ctx.progress('fetch', 'running', `${pulled ? 'pulled' : 'reusing'} image ${id}`);
  return id;
}

/**
 * The version as the release repository signs it (release-repo.ts): the
 * command's url is not used, and a sha256 or length it gives must be the
 * signed one, so the coordinator can neither pick the binary nor be trusted
 * about it. Returns the staged file and, for a registry release, the image it
 * points to (by digest; container hosts only).
 */
async function fetchRelease(ctx: StepContext): Promise<{ file: string; image?: string }> {
  const { config, command } = ctx;
  if (command.kind === 'rollback') throw new CodedError('E_INTERNAL', 'fetch is for prepare/upgrade');
  const target = command.target;
  const repo = await ReleaseRepo.open(config, ctx.log);
  const r = await repo.resolve(target.version);
  addCheck(ctx, 'release', true, `${r.name}: ${r.length} bytes, sha256 ${r.sha256}, signed by ${config.release.repository}`);
  const image = r.custom.image;
  if (image !== undefined && !ctx.driver.images) {
    throw new CodedError(
      'E_ARTIFACT_INVALID',
      `the signed release ${r.custom.version} is the image ${image}, and this host's ${ctx.driver.kind} driver runs a binary, not a container: the release owner signs the guts-node binary for it (\`guts-upgrade release add --file\`); nothing was changed`,
    );
  }
  checkReleasePolicy(r.custom, ctx.data.fromVersion!, config.release.allowDowngrade);
  addCheck(
    ctx,
    'release-policy',
    true,
    `path kind ${r.custom.pathKind}, migration ${r.custom.migration}${r.custom.minFrom ? `, from ${r.custom.minFrom} on` : ''}`,
  );
  adoptSignedMigration(ctx, r.custom.migration);
  const differs = [
    target.sha256 !== undefined && target.sha256 !== r.sha256 ? `sha256 ${target.sha256}` : null,
    target.length !== undefined && target.length !== r.length ? `length ${target.length}` : null,
  ].filter(Boolean);
  if (differs.length > 0) {
    throw new CodedError(
      'E_RELEASE_MISMATCH',
      `the command gives ${differs.join(' and ')} for ${target.version}, the signed release has sha256 ${r.sha256}, length ${r.length}; nothing was downloaded`,
    );
  }
  const key = config.releasePublicKey;
  if (key && target.signature) {
    const ok = verifyArtifactDigest(r.sha256, target.signature, key);
    addCheck(ctx, 'signature', ok, ok ? 'ed25519 signature valid' : 'ed25519 signature does not verify');
    if (!ok) throw new CodedError('E_SIGNATURE', `the signature of ${target.version} (${r.sha256}) does not verify with the configured release key`);
  }
  if (r.length > config.fetch.maxBytes) {
    throw new CodedError(
      'E_FETCH_TOO_LARGE',
      `${r.name} is signed as ${r.length} bytes, more than config fetch.maxBytes (${config.fetch.maxBytes}); nothing was downloaded`,
    );
  }
  fs.mkdirSync(config.stagingDir, { recursive: true, mode: 0o700 });
  const final = stagedPath(config.stagingDir, r.sha256);
  ctx.save({ artifactSha256: r.sha256 });
  const staged = (file: string) => (image === undefined ? { file } : { file, image: readImagePointer(r.name, file, image) });
  if (fs.existsSync(final) && (await sha256File(final)) === r.sha256) {
    ctx.progress('fetch', 'running', `using the staged artifact ${final}`);
    return staged(final);
  }
  fs.rmSync(final, { force: true });
  if (command.kind === 'upgrade' && command.options?.requireStaged === true) {
    throw new CodedError('E_NOT_STAGED', `no staged artifact with sha256 ${r.sha256}; send a prepare command first`);
  }
  ctx.progress('fetch', 'running', `downloading ${r.name} (${r.length} bytes) from the release repository`);
  await repo.download(r, final);
  addCheck(ctx, 'checksum', true, `length ${r.length} and hashes as signed`);
  return staged(final);
}

/**
 * The migration the release owners signed replaces the one the version numbers
 * suggest (preflight's guess): the migrate step and a later rollback follow it.
 */
function adoptSignedMigration(ctx: StepContext, migration: ReleaseCustom['migration']): void {
  const path = ctx.data.path;
  // A release's migration is the way into it from older versions; a downgrade to it is not that way.
  if (!path || path.downgrade || path.migration === migration) return;
  if (migration === 'manual' && ctx.command.kind === 'upgrade' && !ctx.config.commands.migrate) {
    throw new CodedError(
      'E_CONFIG',
      `config commands.migrate: the signed release ${path.to} needs a manual migration and no migration command is configured; nothing was changed`,
    );
  }
  ctx.save({ path: { ...path, migration } });
}

/** The artifact at the command's url, checked against the command's sha256 (and signature, with a release key). */
async function fetchByUrl(ctx: StepContext, target: Artifact): Promise<string> {
  const { config, command } = ctx;
  const key = config.releasePublicKey;
  ctx.save({ artifactSha256: target.sha256 });

  // The signature covers the digest statement, so it is checked before a byte is downloaded.
  if (key) {
    if (!target.signature) throw new CodedError('E_SIGNATURE_MISSING', `a release key is configured and ${target.version} carries no signature`);
    const ok = verifyArtifactDigest(target.sha256, target.signature, key);
    addCheck(ctx, 'signature', ok, ok ? 'ed25519 signature valid' : 'ed25519 signature does not verify');
    if (!ok) throw new CodedError('E_SIGNATURE', `the signature of ${target.version} (${target.sha256}) does not verify with the configured release key`);
  }

  fs.mkdirSync(config.stagingDir, { recursive: true, mode: 0o700 });
  const final = stagedPath(config.stagingDir, target.sha256);
  const partial = `${final}.partial`;
  let staged = false;
  if (fs.existsSync(final)) {
    staged = (await sha256File(final)) === target.sha256;
    if (!staged) fs.rmSync(final, { force: true });
  }
  const requireStaged = command.kind === 'upgrade' && command.options?.requireStaged === true;
  if (!staged && requireStaged) throw new CodedError('E_NOT_STAGED', `no staged artifact with sha256 ${target.sha256}; send a prepare command first`);

  if (staged) {
    ctx.progress('fetch', 'running', `using the staged artifact ${final}`);
  } else {
    const bound = downloadBound(target, config);
    const attempts = config.fetch.retries + 1;
    const limits = { maxBytes: bound.bytes, allowedOrigins: config.fetch.allowedOrigins, timeoutMs: config.fetch.timeoutMs };
    let lastPct = -10;
    for (let i = 0; ; i++) {
      let have = fs.existsSync(partial) ? fs.statSync(partial).size : 0;
      // Left by an attempt under a larger bound: it cannot be resumed within this one.
      if (have > bound.bytes) {
        fs.rmSync(partial, { force: true });
        have = 0;
      }
      if (target.length !== undefined && have === target.length) break; // all there: the checksum decides
      try {
        await download(target.url, partial, have, limits, (n) => {
          // Percent of the length the command gave only: counts against the remote's own figures would report what it sent.
          if (target.length === undefined) return;
          const pct = Math.floor((n / target.length) * 100);
          if (pct >= lastPct + 10) {
            lastPct = pct;
            ctx.progress('fetch', 'running', `${n}/${target.length} bytes`, pct);
          }
        });
        break;
      } catch (err) {
        const permanent = err instanceof DownloadError && err.permanent;
        const onDisk = fs.existsSync(partial) ? fs.statSync(partial).size : 0;
        // The remote's words (status, redirect target, network error) stay in this log.
        ctx.log.warn({ err: (err as Error).message, url: target.url, attempt: i + 1, bytesOnDisk: onDisk }, 'artifact download failed');
        if (permanent || i + 1 >= attempts) {
          fs.rmSync(partial, { force: true });
          throw fetchFailure(err, target.url, bound);
        }
        const delay = Math.min(config.fetch.backoffMs * 2 ** i, 30_000) * (0.5 + Math.random() / 2);
        ctx.progress('fetch', 'running', `attempt ${i + 1} failed; retrying in ${Math.round(delay)} ms, resuming what arrived`);
        await sleep(delay);
      }
    }
    const sum = await sha256File(partial);
    const match = sum === target.sha256;
    // Only the expected digest travels: the digest of what arrived would tell the sender about content it could not see.
    addCheck(ctx, 'checksum', match, match ? `sha256 ${target.sha256}` : `the download does not match the expected sha256 ${target.sha256}`);
    if (!match) {
      ctx.log.warn({ url: target.url, expected: target.sha256, got: sum }, 'artifact checksum mismatch');
      fs.rmSync(partial, { force: true });
      throw new CodedError(
        'E_CHECKSUM',
        `the artifact downloaded from ${target.url} does not match the expected sha256 ${target.sha256}; it was deleted (the agent's log has the digest it had)`,
      );
    }
    fs.chmodSync(partial, 0o755);
    fsyncPath(partial);
    fs.renameSync(partial, final);
    fsyncPath(config.stagingDir);
  }
  return final;
}

/** The most bytes the download may bring: the command's length when it gives one, else fetch.maxBytes. */
export function downloadBound(target: Artifact, config: AgentConfig): { bytes: number; source: string } {
  const cap = config.fetch.maxBytes;
  if (target.length === undefined) return { bytes: cap, source: 'config fetch.maxBytes' };
  if (target.length > cap) {
    throw new CodedError(
      'E_FETCH_TOO_LARGE',
      `${target.version} is given as ${target.length} bytes, more than config fetch.maxBytes (${cap}); nothing was downloaded`,
    );
  }
  return { bytes: target.length, source: "the artifact's length in the command" };
}

/** The coded error for a failed download: it names what failed, never what the remote answered. */
function fetchFailure(err: unknown, url: string, bound: { bytes: number; source: string }): CodedError {
  if (err instanceof DownloadError && err.code === 'E_FETCH_TOO_LARGE') {
    return new CodedError(
      'E_FETCH_TOO_LARGE',
      `the download from ${url} passed ${bound.bytes} bytes (${bound.source}); it was cut off there and nothing was kept`,
    );
  }
  if (err instanceof DownloadError && err.code === 'E_FETCH_REDIRECT') {
    const what = err.redirect === 'too-many' ? `more than ${MAX_REDIRECTS} redirects` : 'a redirect to another origin, not in config fetch.allowedOrigins';
    return new CodedError('E_FETCH_REDIRECT', `the download from ${url} met ${what}; nothing was kept (the agent's log names the redirect)`);
  }
  return new CodedError('E_FETCH', `cannot download ${url}; the reason (HTTP status or network error) is in the agent's log`);
}

async function normalized(v: string): Promise<string> {
  return v.replace(/^v/, '');
}

export function randomId(): string {
  return crypto.randomBytes(4).toString('hex');
}
