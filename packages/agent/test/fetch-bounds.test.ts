/**
 * The fetch step as the coordinator drives it: prepare commands into a real
 * agent, artifacts from real HTTP servers on 127.0.0.1. Bounded size, bounded
 * and same-origin redirects, and failures that tell the sender nothing about
 * what the remote answered.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import t from 'tap';
import { endless, serve } from './http-fixtures.js';
import { UNSIGNED_HOST } from './helpers.js';
import { PROTOCOL_VERSION, type Artifact, type Command, type Result } from '@guts-upgrade/protocol';
import { Agent } from '../src/agent.js';
import { resolveConfig } from '../src/config.js';
import type { ProgressEvent } from '../src/steps/context.js';

type Tap = { teardown(fn: () => unknown): void };

/** A port nothing listens on: the node API of a host whose node is down. */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as net.AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

const RELEASE = Buffer.from('#!/bin/sh\necho "guts-node 1.0.1"\n');
const RELEASE_SHA = crypto.createHash('sha256').update(RELEASE).digest('hex');

interface Host {
  agent: Agent;
  stagingDir: string;
  /** What the agent logged locally (pino JSON lines). */
  log: string[];
  prepare(target: Partial<Artifact> & { url: string }): Promise<{ result: Result; progress: ProgressEvent[] }>;
}

async function host(t: Tap, fetch: Record<string, unknown>): Promise<Host> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'guts-fetch-bounds-'));
  fs.mkdirSync(path.join(dir, 'bin'));
  fs.mkdirSync(path.join(dir, 'data'));
  fs.writeFileSync(path.join(dir, 'bin', 'guts-node'), '#!/bin/sh\necho "guts-node 1.0.0"\n', { mode: 0o755 });
  const config = resolveConfig(
    {
      nodeId: 'v0',
      service: { driver: 'process' },
      node: { binary: 'bin/guts-node', dataDir: 'data', config: 'config.yaml', apiUrl: `http://127.0.0.1:${await closedPort()}`, metricsUrl: null },
      stateDir: 'state',
      // The url path these bounds guard exists only on an allowUnsigned host (with a repository, the signed length bounds it).
      ...UNSIGNED_HOST,
      fetch: { retries: 2, backoffMs: 10, timeoutMs: 5000, ...fetch },
    },
    {},
    dir,
  );
  const log: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      log.push(chunk.toString());
      cb();
    },
  });
  const agent = new Agent(config, pino({ level: 'info' }, sink));
  t.teardown(() => {
    agent.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  let n = 0;
  return {
    agent,
    stagingDir: config.stagingDir,
    log,
    async prepare(target) {
      const progress: ProgressEvent[] = [];
      const stop = agent.addListener({ progress: (ev) => progress.push(ev) });
      const command = {
        proto: PROTOCOL_VERSION,
        type: 'command',
        id: `prep-${++n}`,
        kind: 'prepare',
        issuedAt: new Date().toISOString(),
        target: { version: '1.0.1', sha256: RELEASE_SHA, ...target },
      } as Command;
      const sub = await agent.submit(command);
      if (sub.ack !== 'accepted') throw new Error(`not accepted: ${JSON.stringify(sub)}`);
      const result = await sub.done;
      stop();
      return { result, progress };
    },
  };
}

/** Everything about a command that travels back to the coordinator, as text. */
function sentBack(result: Result, progress: ProgressEvent[]): string[] {
  return [
    result.message ?? '',
    ...(result.evidence?.checks ?? []).flatMap((c) => [c.detail ?? '', c.last ?? '']),
    // Transitions start with their timestamp; what follows is what the agent wrote.
    ...(result.evidence?.journalTail ?? []).map((l) => l.slice(l.indexOf(' ') + 1)),
    ...progress.map((p) => p.message ?? ''),
  ];
}

function staged(h: Host): string[] {
  return fs.existsSync(h.stagingDir) ? fs.readdirSync(h.stagingDir) : [];
}

t.test('an oversized body is cut off at the bound and staging keeps nothing', async (t) => {
  const srv = await serve(t, (_req, res) => endless(res));
  const h = await host(t, { maxBytes: 64 * 1024 });

  // The finding: a 395-byte binary, an endless body. The command's length is the bound.
  const withLength = await h.prepare({ url: `${srv.origin}/guts-node`, length: 395 });
  t.equal(withLength.result.outcome, 'failed');
  t.equal(withLength.result.code, 'E_FETCH_TOO_LARGE');
  t.match(withLength.result.message, /passed 395 bytes \(the artifact's length in the command\)/);
  t.same(staged(h), [], 'staging holds nothing');
  t.equal(srv.requests.length, 1, 'not retried');

  // No length in the command: config fetch.maxBytes is the bound.
  const withoutLength = await h.prepare({ url: `${srv.origin}/guts-node` });
  t.equal(withoutLength.result.code, 'E_FETCH_TOO_LARGE');
  t.match(withoutLength.result.message, /passed 65536 bytes \(config fetch\.maxBytes\)/);
  t.same(staged(h), [], 'staging holds nothing');

  // A length above the configured cap is refused before any request.
  const asked = srv.requests.length;
  const tooLong = await h.prepare({ url: `${srv.origin}/guts-node`, length: 1024 * 1024 });
  t.equal(tooLong.result.code, 'E_FETCH_TOO_LARGE');
  t.match(tooLong.result.message, /more than config fetch\.maxBytes \(65536\); nothing was downloaded/);
  t.equal(srv.requests.length, asked, 'no request was made');
  t.same(staged(h), []);
});

t.test('a redirect loop stops after 5 redirects with E_FETCH_REDIRECT', async (t) => {
  const srv = await serve(t, (req, res) => {
    res.writeHead(302, { location: `${req.url}x` });
    res.end();
  });
  const h = await host(t, {});
  const { result } = await h.prepare({ url: `${srv.origin}/loop` });
  t.equal(result.code, 'E_FETCH_REDIRECT');
  t.match(result.message, /more than 5 redirects/);
  t.equal(srv.requests.length, 6, 'the first request and 5 redirects, once: a refused redirect is not retried');
  t.same(staged(h), []);
});

t.test('a redirect to another origin is refused unless config fetch.allowedOrigins lists it', async (t) => {
  const mirror = await serve(t, (_req, res) => res.end(RELEASE));
  const srv = await serve(t, (_req, res) => {
    res.writeHead(302, { location: `${mirror.origin}/guts-node-1.0.1` });
    res.end();
  });
  const strict = await host(t, {});
  const refused = await strict.prepare({ url: `${srv.origin}/guts-node-1.0.1` });
  t.equal(refused.result.code, 'E_FETCH_REDIRECT');
  t.match(refused.result.message, /a redirect to another origin, not in config fetch\.allowedOrigins/);
  t.notOk(
    sentBack(refused.result, refused.progress).some((s) => s.includes(mirror.origin)),
    "the redirect's target is not sent back",
  );
  t.ok(
    strict.log.some((l) => l.includes(mirror.origin)),
    "the agent's own log names it",
  );
  t.equal(mirror.requests.length, 0, 'the other origin was never asked');
  t.same(staged(strict), []);

  const allowing = await host(t, { allowedOrigins: [`${mirror.origin}/`] });
  const ok = await allowing.prepare({ url: `${srv.origin}/guts-node-1.0.1`, length: RELEASE.length });
  t.equal(ok.result.outcome, 'succeeded', ok.result.message ?? '');
  t.same(staged(allowing), [RELEASE_SHA], 'staged under its sha256');
  t.ok(
    ok.progress.some((p) => p.step === 'fetch' && p.percent === 100),
    "progress counts against the command's length",
  );
});

t.test('a failure sends back no status, body or digest of what the remote answered', async (t) => {
  const secretBody = 'internal-service-says-hello';
  const secretHash = crypto.createHash('sha256').update(secretBody).digest('hex');
  const srv = await serve(t, (req, res) => {
    if (req.url === '/status') {
      res.writeHead(451, 'Secret Reason Phrase');
      res.end(secretBody);
    } else res.end(secretBody);
  });
  const h = await host(t, {});

  const status = await h.prepare({ url: `${srv.origin}/status` });
  t.equal(status.result.code, 'E_FETCH');
  t.match(status.result.message, /the reason \(HTTP status or network error\) is in the agent's log/);
  for (const s of sentBack(status.result, status.progress)) {
    t.notMatch(s, /451|Secret Reason|internal-service/, `no status or body in ${JSON.stringify(s)}`);
  }
  t.ok(
    h.log.some((l) => l.includes('HTTP 451')),
    "the agent's own log has the status",
  );

  const content = await h.prepare({ url: `${srv.origin}/content` });
  t.equal(content.result.code, 'E_CHECKSUM');
  t.match(content.result.message, new RegExp(`does not match the expected sha256 ${RELEASE_SHA}`));
  t.notOk(JSON.stringify([content.result, content.progress]).includes(secretHash), 'the digest of what arrived is not sent back');
  t.ok(
    h.log.some((l) => l.includes(secretHash)),
    "the agent's own log has it",
  );
  t.same(staged(h), []);
});
