/** A static HTTP server for artifacts, with Range support and injectable faults. */
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export interface ArtifactServerFaults {
  /** Send only this many body bytes, then destroy the socket… */
  cutAfterBytes?: number;
  /** …for the first this-many file requests (default: all, when cutAfterBytes is set). */
  cutFirst?: number;
  /** Answer 500 to the first this-many file requests. */
  fail500First?: number;
  /** Delay before answering each request. */
  delayMs?: number;
}

export interface ArtifactServer {
  url: string;
  port: number;
  /** Counts of GET requests for files and of those answered with a fault; where each Range request started. */
  stats: { requests: number; faulted: number; rangeStarts: number[] };
  close(): Promise<void>;
}

export function parseRange(header: string, size: number): { start: number; end: number } | null | 'invalid' {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return 'invalid';
  let start: number;
  let end: number;
  if (m[1] === '') {
    start = Math.max(0, size - Number(m[2]));
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start > end || start >= size) return null;
  return { start, end };
}

export function startArtifactServer(opts: { dir: string; host?: string; port?: number; faults?: ArtifactServerFaults }): Promise<ArtifactServer> {
  const root = path.resolve(opts.dir);
  const faults = opts.faults ?? {};
  const stats = { requests: 0, faulted: 0, rangeStarts: [] as number[] };
  const server = http.createServer((req, res) => {
    const handle = () => {
      const rel = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname).replace(/^\/+/, '');
      const file = path.resolve(root, rel);
      if (!file.startsWith(root + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('not found\n');
        return;
      }
      const size = fs.statSync(file).size;
      const isGet = req.method === 'GET';
      const n = isGet ? ++stats.requests : stats.requests;
      if (isGet && faults.fail500First && n <= faults.fail500First) {
        stats.faulted++;
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('injected failure\n');
        return;
      }
      let start = 0;
      let end = size - 1;
      let status = 200;
      const headers: Record<string, string | number> = { 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' };
      if (req.headers.range) {
        const r = parseRange(req.headers.range, size);
        if (r === null || r === 'invalid') {
          res.writeHead(416, { 'content-range': `bytes */${size}` });
          res.end();
          return;
        }
        ({ start, end } = r);
        status = 206;
        stats.rangeStarts.push(start);
        headers['content-range'] = `bytes ${start}-${end}/${size}`;
      }
      headers['content-length'] = size === 0 ? 0 : end - start + 1;
      res.writeHead(status, headers);
      if (!isGet || size === 0) {
        res.end();
        return;
      }
      const cut = faults.cutAfterBytes !== undefined && (faults.cutFirst === undefined || n <= faults.cutFirst);
      const limitEnd = cut ? Math.min(end, start + faults.cutAfterBytes! - 1) : end;
      if (cut) stats.faulted++;
      const stream = fs.createReadStream(file, { start, end: limitEnd });
      stream.on('error', () => res.destroy());
      if (cut) {
        // Cut only once the bytes sent so far left the process: destroying with
        // them still buffered would send nothing, and there would be no partial
        // download for the client to resume (flaky under load).
        stream.on('end', () => {
          const sock = res.socket;
          if (sock && !sock.destroyed)
            sock.write('', () => {
              sock.destroy();
              res.destroy();
            });
          else res.destroy();
        });
        stream.pipe(res, { end: false });
      } else stream.pipe(res);
    };
    if (faults.delayMs) setTimeout(handle, faults.delayMs);
    else handle();
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      const a = server.address() as AddressInfo;
      const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
      resolve({
        url: `http://${host}:${a.port}`,
        port: a.port,
        stats,
        close: () =>
          new Promise<void>((r) => {
            server.closeAllConnections();
            server.close(() => r());
          }),
      });
    });
  });
}
