/**
 * The transport tuf-js downloads the release repository through: download.ts,
 * so metadata and targets meet the same bounds as any artifact (at most the
 * length tuf-js allows for the file, at most MAX_REDIRECTS same-origin or
 * allowed redirects, the fetch timeout), instead of tuf-js's own fetcher
 * (make-fetch-happen), which follows redirects anywhere and keeps an HTTP cache.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Fetcher } from 'tuf-js';
// Not re-exported by the package's index; the updater tells a missing root version from an outage by these classes.
import { DownloadHTTPError, DownloadLengthMismatchError } from 'tuf-js/dist/error.js';
import type { AgentConfig } from './config.js';
import { DownloadError, download } from './download.js';

export class BoundedFetcher implements Fetcher {
  constructor(
    private readonly tmpDir: string,
    private readonly fetch: AgentConfig['fetch'],
    /** Every failure's own words, for the agent's log. */
    private readonly onFailure: (url: string, detail: string) => void,
  ) {}

  async downloadFile<T>(url: string, maxLength: number, handler: (file: string) => Promise<T>): Promise<T> {
    fs.mkdirSync(this.tmpDir, { recursive: true, mode: 0o700 });
    const tmp = path.join(this.tmpDir, `download-${crypto.randomBytes(6).toString('hex')}`);
    try {
      try {
        await download(url, tmp, 0, { maxBytes: maxLength, allowedOrigins: this.fetch.allowedOrigins, timeoutMs: this.fetch.timeoutMs }, () => undefined);
      } catch (err) {
        this.onFailure(url, (err as Error).message);
        if (err instanceof DownloadError && err.code === 'E_FETCH_TOO_LARGE') throw new DownloadLengthMismatchError('Max length reached');
        if (err instanceof DownloadError && err.status !== undefined) throw new DownloadHTTPError('Failed to download', err.status);
        throw new Error(`Failed to download: ${err instanceof DownloadError ? err.code : 'network error'}`);
      }
      return await handler(tmp);
    } finally {
      fs.rmSync(tmp, { force: true });
    }
  }

  downloadBytes(url: string, maxLength: number): Promise<Buffer> {
    return this.downloadFile(url, maxLength, async (file) => fs.readFileSync(file));
  }
}
