/**
 * TUF release repositories for the agent's tests: written by the real release
 * tool (`guts-upgrade release`, the coordinator's CLI, run as a child), served
 * by a node:http static server whose answers a test can replace per path (an
 * attacker on the repository or the network), and re-signed by hand with the
 * keys the tool wrote (an attacker holding some of them).
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { childEnv } from './helpers.js';

/** The operator CLI, built beside this package by `tsc -b`. */
export const RELEASE_CLI = fileURLToPath(new URL('../../../coordinator/dist/src/cli.js', import.meta.url));

export function releaseCli(args: string[]): string {
  return execFileSync(process.execPath, [RELEASE_CLI, 'release', ...args], { env: childEnv(), encoding: 'utf8' });
}

/** What the server sends for a path instead of the file: bytes, or a body that never ends. */
export type Override = Buffer | 'endless';

export interface RepoServer {
  url: string;
  overrides: Map<string, Override>;
  /** Bytes sent for each endless answer before the client hung up. */
  endlessSent: number[];
  close(): Promise<void>;
}

export async function serveDir(root: string): Promise<RepoServer> {
  const overrides = new Map<string, Override>();
  const endlessSent: number[] = [];
  const server = http.createServer((req, res) => {
    const p = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const o = overrides.get(p);
    if (o === 'endless') {
      // No Content-Length: the client learns the size only by counting. Bounded here so a broken client cannot hang the test.
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const chunk = Buffer.alloc(64 * 1024, 0x41);
      let sent = 0;
      const pump = () => {
        while (!res.destroyed && sent < 256 * 1024 * 1024) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      res.on('close', () => endlessSent.push(sent));
      pump();
      return;
    }
    if (o) {
      res.writeHead(200, { 'content-length': o.length });
      res.end(o);
      return;
    }
    const file = path.join(root, path.normalize(p));
    if (!file.startsWith(root) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404);
      res.end();
      return;
    }
    res.writeHead(200, { 'content-length': fs.statSync(file).size });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    overrides,
    endlessSent,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** OLPC canonical JSON as TUF signs it: sorted keys, no whitespace (the metadata here holds no control characters). */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

interface KeyFile {
  keyid: string;
  private: string;
}

export type Md = { signed: Record<string, unknown> & { version: number }; signatures: { keyid: string; sig: string }[] };

/** A repository on disk and its keys, for scenarios that forge what the real tool would not write. */
export class Repo {
  constructor(
    readonly dir: string,
    readonly keysDir = `${dir}-keys`,
  ) {}

  metaPath(name: string): string {
    return path.join(this.dir, 'metadata', `${name}.json`);
  }

  read(name: string): Md {
    return JSON.parse(fs.readFileSync(this.metaPath(name), 'utf8')) as Md;
  }

  bytes(name: string): Buffer {
    return fs.readFileSync(this.metaPath(name));
  }

  keys(role: string): KeyFile[] {
    const d = path.join(this.keysDir, role);
    return fs.readdirSync(d).map((f) => JSON.parse(fs.readFileSync(path.join(d, f), 'utf8')) as KeyFile);
  }

  /** Signs `md.signed` with the given keys, replacing its signatures; returns the bytes as the tool would write them. */
  static sign(md: Md, keys: KeyFile[]): Buffer {
    const data = Buffer.from(canonical(md.signed));
    md.signatures = keys.map((k) => ({ keyid: k.keyid, sig: crypto.sign(null, data, crypto.createPrivateKey(k.private)).toString('hex') }));
    return Buffer.from(`${JSON.stringify(md, null, 2)}\n`);
  }

  static meta(version: number, data: Buffer): { version: number; length: number; hashes: { sha256: string } } {
    return { version, length: data.length, hashes: { sha256: crypto.createHash('sha256').update(data).digest('hex') } };
  }

  /**
   * What an attacker holding the online keys (snapshot, timestamp) publishes
   * over `targets` bytes: a snapshot naming them and a timestamp naming that,
   * each one version past the repository's. Returns the three files' bytes.
   */
  onlineResign(targets: Buffer, targetsVersion: number, timestampExpires?: string): { targets: Buffer; snapshot: Buffer; timestamp: Buffer } {
    const snap = this.read('snapshot');
    snap.signed.version += 1;
    snap.signed.meta = { 'targets.json': Repo.meta(targetsVersion, targets) };
    const snapshot = Repo.sign(snap, this.keys('snapshot'));
    const ts = this.read('timestamp');
    ts.signed.version += 1;
    ts.signed.meta = { 'snapshot.json': Repo.meta(snap.signed.version, snapshot) };
    if (timestampExpires) ts.signed.expires = timestampExpires;
    return { targets, snapshot, timestamp: Repo.sign(ts, this.keys('timestamp')) };
  }
}
