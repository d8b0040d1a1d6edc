import { type ChildProcessByStdio, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function sha256File(file: string): Promise<string> {
  const h = crypto.createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

export function fsyncPath(p: string): void {
  const fd = fs.openSync(p, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Writes a file via tmp + fsync + rename + fsync(dir), so it is either old or new after a crash. */
export function writeFileAtomic(file: string, data: string | Buffer, mode = 0o644): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w', mode);
  try {
    fs.writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  fsyncPath(path.dirname(file));
}

/** Copies src to dest atomically (tmp name beside dest, fsync, rename). dest never goes missing. */
export function copyFileAtomic(src: string, dest: string, mode: number): void {
  const tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.tmp-${process.pid}`);
  fs.copyFileSync(src, tmp);
  fs.chmodSync(tmp, mode);
  fsyncPath(tmp);
  fs.renameSync(tmp, dest);
  fsyncPath(path.dirname(dest));
}

export interface RunResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Runs an argv (never a shell) with a timeout; output is capped. */
/** `uid`/`gid`: run as that user (the agent must be root; libuv also drops supplementary groups). */
export function runArgv(argv: string[], opts: { timeoutMs: number; env?: NodeJS.ProcessEnv; cwd?: string; uid?: number; gid?: number }): Promise<RunResult> {
  return new Promise((resolve) => {
    const [cmd, ...args] = argv;
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const cap = (s: string, add: string) => (s.length > 65536 ? s : s + add);
    let child: ChildProcessByStdio<null, Readable, Readable>;
    try {
      child = spawn(cmd!, args, {
        env: opts.env ?? process.env,
        cwd: opts.cwd,
        stdio: ['ignore', 'pipe', 'pipe'],
        ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
        ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
      });
    } catch (err) {
      resolve({ code: null, signal: null, stdout: '', stderr: (err as Error).message, timedOut: false });
      return;
    }
    child.stdout.on('data', (d: Buffer) => {
      stdout = cap(stdout, d.toString());
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr = cap(stderr, d.toString());
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: null, signal: null, stdout, stderr: stderr + err.message, timedOut });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}

export function tailLines(text: string, n: number): string[] {
  const lines = text.split('\n').filter((l) => l.length > 0);
  return lines.slice(-n).map((l) => l.slice(0, 4000));
}

/** Last n lines of a file, reading at most the last 256 KiB. */
export function tailFile(file: string, n: number): string[] {
  try {
    const st = fs.statSync(file);
    const len = Math.min(st.size, 256 * 1024);
    const fd = fs.openSync(file, 'r');
    try {
      const buf = Buffer.alloc(len);
      fs.readSync(fd, buf, 0, len, st.size - len);
      return tailLines(buf.toString('utf8'), n);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return [];
  }
}

export function dirSize(dir: string): number {
  let total = 0;
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += dirSize(p);
    else if (e.isFile()) total += fs.statSync(p).size;
  }
  return total;
}

/** Nearest existing ancestor of p (for statfs before a dir exists). */
export function existingAncestor(p: string): string {
  let cur = path.resolve(p);
  while (!fs.existsSync(cur)) {
    const up = path.dirname(cur);
    if (up === cur) break;
    cur = up;
  }
  return cur;
}

export async function freeBytes(p: string): Promise<number> {
  const s = await fs.promises.statfs(existingAncestor(p));
  return Number(s.bavail) * Number(s.bsize);
}

export function isoNow(): string {
  return new Date().toISOString();
}
