/** The bounded download against real HTTP servers on 127.0.0.1: size bound, redirect count, redirect origins. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { endless, serve } from './http-fixtures.js';
import { download, DownloadError, MAX_REDIRECTS, type DownloadLimits } from '../src/download.js';

type Tap = { teardown(fn: () => unknown): void };

function tmpFile(t: Tap): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'guts-download-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, 'artifact.partial');
}

const limits = (maxBytes: number, allowedOrigins: string[] = []): DownloadLimits => ({ maxBytes, allowedOrigins, timeoutMs: 5000 });

t.test('a body past the bound is cut off there: never more than the bound on disk', async (t) => {
  const srv = await serve(t, (_req, res) => endless(res));
  const file = tmpFile(t);
  const bound = 395;
  const err = await download(`${srv.origin}/guts-node`, file, 0, limits(bound), () => {}).catch((e: unknown) => e);
  t.ok(err instanceof DownloadError, 'rejected with a DownloadError');
  t.equal((err as DownloadError).code, 'E_FETCH_TOO_LARGE');
  t.equal((err as DownloadError).permanent, true, 'not retried');
  // The server writes forever: that the call returned at all means the agent hung up.
  t.ok(fs.statSync(file).size <= bound, `at most ${bound} bytes written (${fs.statSync(file).size})`);

  const bigger = 200 * 1024;
  const err2 = await download(`${srv.origin}/guts-node`, file, 0, limits(bigger), () => {}).catch((e: unknown) => e);
  t.equal((err2 as DownloadError).code, 'E_FETCH_TOO_LARGE');
  t.ok(fs.statSync(file).size <= bigger, `a bound larger than a chunk: at most ${bigger} bytes written (${fs.statSync(file).size})`);
});

t.test('a Content-Length past the bound is refused before a byte is written', async (t) => {
  const srv = await serve(t, (_req, res) => endless(res, 300 * 1024 * 1024));
  const file = tmpFile(t);
  const err = await download(`${srv.origin}/guts-node`, file, 0, limits(1024), () => {}).catch((e: unknown) => e);
  t.equal((err as DownloadError).code, 'E_FETCH_TOO_LARGE');
  t.notOk(fs.existsSync(file), 'no file was opened');
});

t.test('a body within the bound downloads; a resumed one counts the bytes already on disk', async (t) => {
  const body = Buffer.from('#!/bin/sh\necho guts-node 1.0.1\n');
  const srv = await serve(t, (req, res) => {
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (m) {
      const from = Number(m[1]);
      res.writeHead(206, { 'content-range': `bytes ${from}-${body.length - 1}/${body.length}`, 'content-length': String(body.length - from) });
      res.end(body.subarray(from));
    } else {
      res.writeHead(200, { 'content-length': String(body.length) });
      res.end(body);
    }
  });
  const file = tmpFile(t);
  t.equal(await download(`${srv.origin}/a`, file, 0, limits(body.length), () => {}), body.length, 'exactly the bound is fine');
  t.same(fs.readFileSync(file), body);
  fs.writeFileSync(file, body.subarray(0, 10));
  const err = await download(`${srv.origin}/a`, file, 10, limits(body.length - 1), () => {}).catch((e: unknown) => e);
  t.equal((err as DownloadError).code, 'E_FETCH_TOO_LARGE', 'the total a 206 announces is held to the bound');
});

t.test(`a redirect loop stops after ${MAX_REDIRECTS} redirects`, async (t) => {
  const srv = await serve(t, (req, res) => {
    const n = Number(/\/r\/(\d+)/.exec(req.url ?? '')?.[1] ?? 0);
    res.writeHead(302, { location: `/r/${n + 1}` });
    res.end();
  });
  const file = tmpFile(t);
  const err = await download(`${srv.origin}/r/0`, file, 0, limits(1024), () => {}).catch((e: unknown) => e);
  t.equal((err as DownloadError).code, 'E_FETCH_REDIRECT');
  t.equal((err as DownloadError).redirect, 'too-many');
  t.equal((err as DownloadError).permanent, true);
  t.equal(srv.requests.length, MAX_REDIRECTS + 1, 'the first request and 5 redirects followed, no more');
  t.notOk(fs.existsSync(file), 'nothing written');
});

t.test(`${MAX_REDIRECTS} redirects on the same origin are followed`, async (t) => {
  const srv = await serve(t, (req, res) => {
    const n = Number(/\/r\/(\d+)/.exec(req.url ?? '')?.[1] ?? 0);
    if (n < MAX_REDIRECTS) {
      // Relative and absolute locations in turn: both resolve to the same origin.
      res.writeHead(307, { location: n % 2 ? `/r/${n + 1}` : `http://127.0.0.1:${req.socket.localPort}/r/${n + 1}` });
      res.end();
    } else res.end('payload');
  });
  const file = tmpFile(t);
  t.equal(await download(`${srv.origin}/r/0`, file, 0, limits(1024), () => {}), 7);
  t.equal(fs.readFileSync(file, 'utf8'), 'payload');
});

t.test('a redirect to another origin is refused unless that origin is allowed', async (t) => {
  const other = await serve(t, (_req, res) => res.end('from the other origin'));
  const first = await serve(t, (req, res) => {
    res.writeHead(302, { location: req.url === '/file' ? 'file:///etc/passwd' : `${other.origin}/artifact` });
    res.end();
  });
  const file = tmpFile(t);
  const err = await download(`${first.origin}/a`, file, 0, limits(1024), () => {}).catch((e: unknown) => e);
  t.equal((err as DownloadError).code, 'E_FETCH_REDIRECT');
  t.equal((err as DownloadError).redirect, 'other-origin');
  t.equal(other.requests.length, 0, 'the other origin was never asked');

  const fileScheme = await download(`${first.origin}/file`, file, 0, limits(1024, [other.origin]), () => {}).catch((e: unknown) => e);
  t.equal((fileScheme as DownloadError).code, 'E_FETCH_REDIRECT', 'a non-http scheme is never followed');

  t.equal(await download(`${first.origin}/a`, file, 0, limits(1024, [other.origin]), () => {}), 21, 'allowed by fetch.allowedOrigins');
  t.equal(fs.readFileSync(file, 'utf8'), 'from the other origin');
  t.equal(other.requests.length, 1);
});

t.test('an error status is a DownloadError whose detail (for the local log) names it', async (t) => {
  const srv = await serve(t, (_req, res) => {
    res.writeHead(404);
    res.end('not here');
  });
  const file = tmpFile(t);
  const err = await download(`${srv.origin}/a`, file, 0, limits(1024), () => {}).catch((e: unknown) => e);
  t.equal((err as DownloadError).code, 'E_FETCH');
  t.equal((err as DownloadError).permanent, true, 'a 404 is not retried');
  t.match((err as DownloadError).detail, /HTTP 404/);
});
