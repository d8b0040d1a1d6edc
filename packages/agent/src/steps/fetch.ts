/**
 * Download, checksum, signature and --version check of the artifact, while the
 * node keeps running. Artifacts are content addressed in the staging dir
 * (<stagingDir>/<sha256>), so a prepared artifact is reused by the upgrade and
 * a repeated fetch is a no-op.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { CodedError, verifyArtifactDigest, type Artifact } from '@guts-upgrade/protocol';
import { fsyncPath, sha256File, sleep } from '../util.js';
import { addCheck, type StepContext } from './context.js';
import { binaryVersion } from './preflight.js';

export function stagedPath(stagingDir: string, sha256: string): string {
  return path.join(stagingDir, sha256);
}

/**
 * One GET (with Range from `offset`), appending to `file`. Resolves with the
 * bytes now on disk. On a cut connection it rejects only once what arrived is
 * flushed to `file`: destroying the write stream instead would drop the
 * buffered bytes, and the retry would start from an earlier offset (or zero).
 */
function download(url: string, file: string, offset: number, timeoutMs: number, onBytes: (n: number, total: number | null) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith('https:') ? https : http;
    const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
    let failure: Error | null = null;
    let settleBody: (() => void) | null = null;
    const fail = (e: Error) => {
      if (failure) return;
      failure = e;
      if (settleBody) settleBody();
      else reject(e);
    };
    const req = mod.get(url, { headers, timeout: timeoutMs }, (res) => {
      const status = res.statusCode ?? 0;
      if (status >= 300 && status < 400 && res.headers.location) {
        res.resume();
        download(new URL(res.headers.location, url).toString(), file, offset, timeoutMs, onBytes).then(resolve, reject);
        return;
      }
      let start = offset;
      if (status === 200)
        start = 0; // server ignored Range: start over
      else if (status !== 206) {
        res.resume();
        reject(Object.assign(new Error(`HTTP ${status} from ${url}`), { permanent: status >= 400 && status < 500 && status !== 408 && status !== 429 }));
        return;
      }
      const total =
        status === 206 ? Number(/\/(\d+)$/.exec(res.headers['content-range'] ?? '')?.[1] ?? NaN) || null : Number(res.headers['content-length'] ?? NaN) || null;
      const out = fs.createWriteStream(file, { flags: start === 0 ? 'w' : 'a' });
      let written = start;
      settleBody = () => {
        res.unpipe(out);
        if (!out.writableEnded) out.end();
      };
      res.on('data', (d: Buffer) => {
        written += d.length;
        onBytes(written, total);
      });
      res.on('error', fail);
      res.on('aborted', () => fail(new Error('connection aborted')));
      out.on('error', (e) => {
        failure ??= e;
        reject(e);
      });
      out.on('finish', () => {
        if (failure) reject(failure);
        else if (total !== null && written < total) reject(new Error(`short body: ${written} of ${total} bytes`));
        else resolve(written);
      });
      res.pipe(out);
    });
    req.on('timeout', () => req.destroy(new Error(`no data from ${url} for ${timeoutMs} ms`)));
    req.on('error', fail);
  });
}

export async function fetchArtifact(ctx: StepContext): Promise<void> {
  const { config, command } = ctx;
  if (command.kind === 'rollback') throw new CodedError('E_INTERNAL', 'fetch is for prepare/upgrade');
  const target: Artifact = command.target;
  const key = config.releasePublicKey;

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
    const attempts = config.fetch.retries + 1;
    let lastPct = -10;
    for (let i = 0; ; i++) {
      const have = fs.existsSync(partial) ? fs.statSync(partial).size : 0;
      try {
        await download(target.url, partial, have, config.fetch.timeoutMs, (n, total) => {
          if (total) {
            const pct = Math.floor((n / total) * 100);
            if (pct >= lastPct + 10) {
              lastPct = pct;
              ctx.progress('fetch', 'running', `${n}/${total} bytes`, pct);
            }
          }
        });
        break;
      } catch (err) {
        const permanent = (err as { permanent?: boolean }).permanent === true;
        ctx.log.warn({ err: (err as Error).message, attempt: i + 1 }, 'artifact download failed');
        if (permanent || i + 1 >= attempts) {
          fs.rmSync(partial, { force: true });
          throw new CodedError('E_FETCH', `cannot download ${target.url} after ${i + 1} attempt(s): ${(err as Error).message}`);
        }
        const delay = Math.min(config.fetch.backoffMs * 2 ** i, 30_000) * (0.5 + Math.random() / 2);
        ctx.progress('fetch', 'running', `retrying in ${Math.round(delay)} ms (resume from byte ${fs.existsSync(partial) ? fs.statSync(partial).size : 0})`);
        await sleep(delay);
      }
    }
    const sum = await sha256File(partial);
    addCheck(ctx, 'checksum', sum === target.sha256, `expected ${target.sha256}, got ${sum}`);
    if (sum !== target.sha256) {
      fs.rmSync(partial, { force: true });
      throw new CodedError('E_CHECKSUM', `artifact ${target.url} has sha256 ${sum}, expected ${target.sha256}`);
    }
    fs.chmodSync(partial, 0o755);
    fsyncPath(partial);
    fs.renameSync(partial, final);
    fsyncPath(config.stagingDir);
  }
  fs.chmodSync(final, 0o755);
  const v = await binaryVersion(final);
  const ok = v.version === (await normalized(target.version));
  addCheck(ctx, 'artifact-version', ok, `--version printed ${JSON.stringify(v.output.slice(0, 200))}`);
  if (!ok) {
    fs.rmSync(final, { force: true });
    throw new CodedError('E_VERSION_MISMATCH', `the artifact's --version says ${JSON.stringify(v.output.slice(0, 200))}, expected guts-node ${target.version}`);
  }
  ctx.save({ artifactFile: final });
}

async function normalized(v: string): Promise<string> {
  return v.replace(/^v/, '');
}

export function randomId(): string {
  return crypto.randomBytes(4).toString('hex');
}
