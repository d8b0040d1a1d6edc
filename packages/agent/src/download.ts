/**
 * One bounded HTTP(S) GET into a file: at most `maxBytes` on disk, at most
 * MAX_REDIRECTS redirects, each to the first URL's origin or an allowed one.
 *
 * The URL comes from the coordinator, and the agent trusts it no further than
 * that: an unbounded body would fill the staging disk before the checksum
 * could fail, and unbounded or cross-origin redirects would let a command walk
 * the validator's network. What the remote answered (status, redirect target)
 * goes into DownloadError.detail, for the agent's log only.
 */
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';

export const MAX_REDIRECTS = 5;

export type DownloadCode = 'E_FETCH' | 'E_FETCH_TOO_LARGE' | 'E_FETCH_REDIRECT';

/** Why a redirect was refused; safe to report, unlike its target. */
export type RedirectRefusal = 'too-many' | 'other-origin';

export class DownloadError extends Error {
  constructor(
    readonly code: DownloadCode,
    /** For the local log: may name what the remote said. */
    readonly detail: string,
    /** A retry would meet the same answer. */
    readonly permanent: boolean,
    readonly redirect?: RedirectRefusal,
    /** The HTTP status of a refused answer (the release fetcher tells a missing file from an outage by it). */
    readonly status?: number,
  ) {
    super(detail);
    this.name = 'DownloadError';
  }
}

export interface DownloadLimits {
  /** Most bytes the file may hold, bytes kept from an earlier attempt included. */
  maxBytes: number;
  /** Origins (URL.origin form) a redirect may lead to besides the first URL's own. */
  allowedOrigins: readonly string[];
  /** Socket idle time before the attempt fails. */
  timeoutMs: number;
}

/** Where a redirect from `from` leads, or the reason it is refused. */
function redirectTarget(from: string, location: string, origin: string, limits: DownloadLimits, hops: number): string | DownloadError {
  if (hops >= MAX_REDIRECTS)
    return new DownloadError('E_FETCH_REDIRECT', `more than ${MAX_REDIRECTS} redirects, the last from ${from} to ${location}`, true, 'too-many');
  let next: URL;
  try {
    next = new URL(location, from);
  } catch {
    return new DownloadError('E_FETCH_REDIRECT', `unparseable redirect from ${from} to ${JSON.stringify(location)}`, true, 'other-origin');
  }
  const httpLike = next.protocol === 'http:' || next.protocol === 'https:';
  if (!httpLike || (next.origin !== origin && !limits.allowedOrigins.includes(next.origin))) {
    return new DownloadError(
      'E_FETCH_REDIRECT',
      `redirect from ${from} to ${next.href}: origin ${next.origin} is neither ${origin} nor in fetch.allowedOrigins`,
      true,
      'other-origin',
    );
  }
  return next.href;
}

/** The total size the response announces (Content-Range total for 206, Content-Length for 200), or null. */
function announcedTotal(res: http.IncomingMessage, status: number): number | null {
  const raw = status === 206 ? /\/(\d+)$/.exec(res.headers['content-range'] ?? '')?.[1] : res.headers['content-length'];
  const n = Number(raw ?? NaN);
  return Number.isFinite(n) && n > 0 ? n : null;
}

/**
 * GET `url` (with Range from `offset`), appending to `file`. Resolves with the
 * bytes now on disk. On a cut connection it rejects only once what arrived is
 * flushed to `file`: destroying the write stream instead would drop the
 * buffered bytes, and the retry would start from an earlier offset (or zero).
 * A body that would pass `limits.maxBytes` is cut before the chunk that passes
 * it is written (the caller removes the file).
 */
export function download(
  url: string,
  file: string,
  offset: number,
  limits: DownloadLimits,
  onBytes: (n: number, total: number | null) => void,
): Promise<number> {
  const origin = new URL(url).origin;
  return get(url, 0);

  function get(current: string, hops: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const mod = current.startsWith('https:') ? https : http;
      const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
      let failure: Error | null = null;
      let settleBody: (() => void) | null = null;
      const fail = (e: Error) => {
        if (failure) return;
        failure = e;
        if (settleBody) settleBody();
        else reject(e);
      };
      let req: http.ClientRequest;
      try {
        req = mod.get(current, { headers, timeout: limits.timeoutMs }, (res) => {
          const status = res.statusCode ?? 0;
          if (status >= 300 && status < 400 && res.headers.location) {
            // Destroyed, not drained: a redirect's body is never read, however large.
            res.destroy();
            const next = redirectTarget(current, res.headers.location, origin, limits, hops);
            if (next instanceof DownloadError) reject(next);
            else get(next, hops + 1).then(resolve, reject);
            return;
          }
          if (status !== 200 && status !== 206) {
            res.destroy();
            const permanent = status >= 400 && status < 500 && status !== 408 && status !== 429;
            reject(new DownloadError('E_FETCH', `HTTP ${status} from ${current}`, permanent, undefined, status));
            return;
          }
          const start = status === 200 ? 0 : offset; // 200: the server ignored Range, start over
          const total = announcedTotal(res, status);
          if (total !== null && total > limits.maxBytes) {
            res.destroy();
            reject(new DownloadError('E_FETCH_TOO_LARGE', `${current} announces ${total} bytes, more than the bound of ${limits.maxBytes}`, true));
            return;
          }
          const out = fs.createWriteStream(file, { flags: start === 0 ? 'w' : 'a' });
          let written = start;
          let ended = false;
          settleBody = () => {
            if (!ended) {
              ended = true;
              out.end();
            }
          };
          // By hand rather than res.pipe(out): a chunk must be checked against the bound before it is written.
          res.on('data', (d: Buffer) => {
            if (failure) return;
            if (written + d.length > limits.maxBytes) {
              fail(new DownloadError('E_FETCH_TOO_LARGE', `${current} sent more than the bound of ${limits.maxBytes} bytes`, true));
              res.destroy();
              return;
            }
            written += d.length;
            onBytes(written, total);
            if (!out.write(d)) res.pause();
          });
          out.on('drain', () => res.resume());
          res.on('end', () => settleBody?.());
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
        });
      } catch (err) {
        reject(err);
        return;
      }
      req.on('timeout', () => req.destroy(new Error(`no data from ${current} for ${limits.timeoutMs} ms`)));
      req.on('error', fail);
    });
  }
}
