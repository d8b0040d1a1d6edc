/**
 * Writes one backup archive: a plain tar (headers from node-tar's own Header
 * and Pax encoders, so node-tar and GNU tar read it exactly as they read
 * node-tar's archives) and the sha256 of its bytes, in one pass over the data.
 *
 * Why not node-tar's Pack: it reads each file into a buffer of up to 16 MiB,
 * pipes it through streams and leaves the hashing to the main thread; at disk
 * speed the agent then spent as much CPU as the disk spent time (0.45-0.51×
 * GNU tar + fsync) and its RSS grew with the file sizes. Here the bytes move
 * through a fixed ring of SLOTS × SLOT_BYTES of shared memory:
 *   read (thread pool) → write of the full slot (thread pool, one at a time, in order)
 *                      ∥ sha256 of the same slot (a worker thread, in order)
 * and the kernel is asked to write back every SYNC_EVERY bytes while the
 * archive is still being written, so the final fsync does not start the whole
 * disk write from nothing. Memory stays flat whatever the data size.
 */
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { Sha256Worker } from './sha256-worker.js';

const SLOT_BYTES = 1024 * 1024;
const SLOTS = 8;
const SYNC_EVERY = 64 * 1024 * 1024;
const BLOCK = 512;

const read = promisify(fs.read);
const write = promisify(fs.write);
const fdatasync = promisify(fs.fdatasync);
const fsync = promisify(fs.fsync);
const open = promisify(fs.open);
const close = promisify(fs.close);
const lstat = promisify(fs.lstat);

type TarModule = typeof import('tar');
let tarModule: Promise<TarModule> | null = null;
/** node-tar is needed only while a backup is written or restored: loaded then, not at agent start. */
export function loadTar(): Promise<TarModule> {
  tarModule ??= import('tar');
  return tarModule;
}

/** Directories readable by someone are listable by them too (as node-tar writes them). */
function modeFix(mode: number, isDir: boolean): number {
  let m = mode & 0o7777;
  if (isDir) {
    if (m & 0o400) m |= 0o100;
    if (m & 0o40) m |= 0o10;
    if (m & 0o4) m |= 0o1;
  }
  return m;
}

interface Slot {
  buf: Buffer;
  offset: number;
  used: number;
  /** The slot's write and hash, while in flight. */
  busy: Promise<void> | null;
}

/** The archive file as a sequence of slots: filled in order, each written and hashed as soon as it is full. */
class Sink {
  private readonly slots: Slot[];
  private cur = 0;
  private pos = 0;
  private syncedTo = 0;
  private syncing: Promise<void> | null = null;
  private lastWrite: Promise<void> = Promise.resolve();
  private error: unknown = null;

  constructor(
    private readonly fd: number,
    ring: SharedArrayBuffer,
    private readonly hasher: Sha256Worker,
  ) {
    this.slots = Array.from({ length: SLOTS }, (_, i) => ({ buf: Buffer.from(ring, i * SLOT_BYTES, SLOT_BYTES), offset: i * SLOT_BYTES, used: 0, busy: null }));
  }

  private get current(): Slot {
    return this.slots[this.cur]!;
  }

  /** The current slot, with room in it (waits for the slot's previous round to finish). */
  private async room(): Promise<Slot> {
    const s = this.current;
    if (s.busy) {
      await s.busy;
      s.busy = null;
    }
    if (this.error) throw this.error;
    return s;
  }

  /** Sends the current slot to disk and to the hasher, and moves on to the next one. */
  private dispatch(): void {
    const s = this.current;
    if (s.used === 0) return;
    const at = this.pos;
    const len = s.used;
    this.pos += len;
    s.used = 0;
    const writeAll = async () => {
      let done = 0;
      while (done < len) done += (await write(this.fd, s.buf, done, len - done, at + done)).bytesWritten;
    };
    // One write at a time, in order: concurrent writes to one file only queue on its inode lock (spinning, as system CPU).
    const written = this.lastWrite.then(writeAll);
    this.lastWrite = written.catch(() => undefined);
    s.busy = Promise.all([written, this.hasher.update(s.offset, len)]).then(
      () => undefined,
      (err: unknown) => {
        this.error ??= err;
      },
    );
    this.cur = (this.cur + 1) % SLOTS;
    // Start the disk write-back of what is written so far; one at a time, never awaited here.
    if (!this.syncing && this.pos - this.syncedTo >= SYNC_EVERY) {
      const upTo = this.pos;
      this.syncing = fdatasync(this.fd).then(
        () => {
          this.syncedTo = upTo;
          this.syncing = null;
        },
        (err: unknown) => {
          this.error ??= err;
          this.syncing = null;
        },
      );
    }
  }

  async append(bytes: Buffer): Promise<void> {
    let off = 0;
    while (off < bytes.length) {
      const s = await this.room();
      const n = Math.min(SLOT_BYTES - s.used, bytes.length - off);
      bytes.copy(s.buf, s.used, off, off + n);
      s.used += n;
      off += n;
      if (s.used === SLOT_BYTES) this.dispatch();
    }
  }

  async zeros(n: number): Promise<void> {
    while (n > 0) {
      const s = await this.room();
      const k = Math.min(SLOT_BYTES - s.used, n);
      s.buf.fill(0, s.used, s.used + k);
      s.used += k;
      n -= k;
      if (s.used === SLOT_BYTES) this.dispatch();
    }
  }

  /** Copies exactly `size` bytes of `fd` into the archive; a file that ends sooner fails with code EOF (see BackupStore.archive). */
  async copyFrom(fd: number, size: number, absolute: string): Promise<void> {
    let filePos = 0;
    while (filePos < size) {
      const s = await this.room();
      const want = Math.min(SLOT_BYTES - s.used, size - filePos);
      const { bytesRead } = await read(fd, s.buf, s.used, want, filePos);
      if (bytesRead <= 0) throw Object.assign(new Error('encountered unexpected EOF'), { path: absolute, syscall: 'read', code: 'EOF' });
      s.used += bytesRead;
      filePos += bytesRead;
      if (s.used === SLOT_BYTES) this.dispatch();
    }
  }

  /** Flushes the last slot, waits for every write and hash, fsyncs; returns the archive size. */
  async finish(): Promise<number> {
    this.dispatch();
    await this.drain();
    if (this.error) throw this.error;
    await fsync(this.fd);
    return this.pos;
  }

  /** Waits for everything in flight (also on failure, so no write lands after the file is closed or removed). */
  async drain(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.busy));
    await this.syncing;
  }
}

export interface WrittenArchive {
  sha256: string;
  size: number;
}

/**
 * Writes `entries` (paths relative to `cwd`: directories, regular files; a file seen twice
 * through a hard link is written as a link to its first path, as node-tar does) into `file`,
 * fsynced before this returns. Mtimes, ownership and pax headers as node-tar writes them
 * (not portable): restores are metadata faithful.
 */
export async function writeTar(file: string, cwd: string, entries: string[]): Promise<WrittenArchive> {
  const { Header, Pax } = await loadTar();
  const ring = new SharedArrayBuffer(SLOTS * SLOT_BYTES);
  const hasher = new Sha256Worker(ring);
  const myuid = process.getuid?.() ?? 0;
  const myuser = process.env.USER ?? '';
  const links = new Map<string, string>();
  let fd: number | null = null;
  let sink: Sink | null = null;
  try {
    fd = await open(file, 'w', 0o600);
    sink = new Sink(fd, ring, hasher);
    for (const rel of entries) {
      const absolute = path.resolve(cwd, rel);
      const st = await lstat(absolute);
      let type: 'File' | 'Directory' | 'Link';
      let linkpath: string | undefined;
      let entryPath = rel;
      if (st.isDirectory()) {
        type = 'Directory';
        if (!entryPath.endsWith('/')) entryPath += '/';
      } else if (st.isFile()) {
        type = 'File';
        if (st.nlink > 1) {
          const key = `${st.dev}:${st.ino}`;
          linkpath = links.get(key);
          if (linkpath !== undefined) type = 'Link';
          else links.set(key, rel);
        }
      } else continue; // what node-tar skips too (the data dir walk lists only files and directories)
      const size = type === 'File' ? st.size : 0;
      const fields = {
        path: entryPath,
        linkpath,
        mode: modeFix(st.mode, type === 'Directory'),
        uid: st.uid,
        gid: st.gid,
        size,
        mtime: st.mtime,
        type,
        uname: st.uid === myuid ? myuser : '',
        atime: st.atime,
        ctime: st.ctime,
      };
      const header = new Header(fields);
      if (header.encode()) {
        await sink.append(
          new Pax({
            atime: header.atime,
            ctime: header.ctime,
            gid: header.gid,
            mtime: header.mtime,
            path: entryPath,
            linkpath,
            size: header.size,
            uid: header.uid,
            uname: header.uname,
            dev: st.dev,
            ino: st.ino,
            nlink: st.nlink,
          }).encode(),
        );
      }
      await sink.append(header.block!);
      if (size > 0) {
        const src = await open(absolute, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
        try {
          await sink.copyFrom(src, size, absolute);
        } finally {
          await close(src);
        }
        await sink.zeros((BLOCK - (size % BLOCK)) % BLOCK);
      }
    }
    // End of archive: two zero blocks, as node-tar ends it.
    await sink.zeros(2 * BLOCK);
    const size = await sink.finish();
    const sha256 = await hasher.digest();
    return { sha256, size };
  } finally {
    await sink?.drain().catch(() => undefined);
    if (fd !== null) await close(fd).catch(() => undefined);
    await hasher.close();
  }
}
