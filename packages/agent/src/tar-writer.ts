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
 *                      ∥ sha256 of the same slot (a worker thread, in order; this thread for small archives: ring-hash.ts)
 * Full slots go to the disk with O_DIRECT where the file system takes it: a
 * buffered write copies every byte once more into the page cache, which cost
 * the agent more CPU than the whole of GNU tar's run (the kernel's copy was
 * the top of its profile), then the fsync writes it all out anyway. Direct
 * writes skip both, and leave the node's own cached pages where they are.
 * Where direct writes are refused, every slot is written through the page
 * cache and the kernel is asked to write back every SYNC_EVERY bytes while
 * the archive is still being written, so the final fsync does not start the
 * whole disk write from nothing. Memory stays flat whatever the data size.
 */
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { ringHasher, type RingHasher } from './ring-hash.js';

const SLOT_BYTES = 1024 * 1024;
const SLOTS = 8;
const SYNC_EVERY = 64 * 1024 * 1024;
const BLOCK = 512;
/** The largest logical block a direct write may have to be aligned to (file offset, length and memory). */
const DIRECT_ALIGN = 4096;
/** Steps in which an aligned start is looked for in the ring: allocations are at least this aligned. */
const ALIGN_STEP = 8;
/**
 * What the ring asks for: at least 32 MiB, the largest mmap threshold glibc's malloc moves to,
 * so every ring is a fresh mapping of its own and starts GLIBC_CHUNK_HEADER bytes past a page
 * boundary. A smaller ring comes from the heap once an earlier one was freed, at any 16-byte
 * alignment, and direct writes from memory that is not page aligned ran 10× slower here (virtio
 * disk: 62-96 MB/s against 600-750 MB/s from a page-aligned slot, same 1 MiB writes). Only the
 * pages the slots touch become resident; the rest is address space.
 */
const RING_BYTES = Math.max(SLOTS * SLOT_BYTES, 32 * 1024 * 1024) + DIRECT_ALIGN;
/** Where glibc puts the memory of a mapped chunk: after a 16-byte header, so a page starts 16 bytes before the next boundary. */
const GLIBC_CHUNK_HEADER = 16;

const read = promisify(fs.read);
const write = promisify(fs.write);
const fdatasync = promisify(fs.fdatasync);
const fsync = promisify(fs.fsync);
const open = promisify(fs.open);
const close = promisify(fs.close);
const lstat = promisify(fs.lstat);
const ftruncate = promisify(fs.ftruncate);

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

/** A second descriptor on the archive, opened with O_DIRECT, and where in the ring memory is aligned for it. */
interface Direct {
  fd: number;
  /** Byte offset in the ring from which slots start on an aligned address. */
  align: number;
}

/**
 * O_DIRECT on `file`, or null where it is not to be had (no such flag, a file
 * system that refuses it). Direct writes need their memory aligned and
 * JavaScript cannot ask for aligned memory, so the kernel is asked instead: one
 * block written at file offset 0 (rewritten by the archive, or cut off by
 * finish), first from where a page starts when the ring is a glibc mapped chunk
 * (RING_BYTES), then from each ALIGN_STEP in the ring until one is taken (an
 * aligned start that may not be a page's: correct, only slower). Synchronous on
 * purpose: the refusals cost microseconds each, a trip through the thread pool
 * apiece cost the small archives after the node stopped several milliseconds.
 */
function openDirect(file: string, ring: Buffer, wanted: boolean): Direct | null {
  const flag = fs.constants.O_DIRECT;
  if (!wanted || flag === undefined) return null;
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_WRONLY | flag);
  } catch {
    return null;
  }
  for (const align of [DIRECT_ALIGN - GLIBC_CHUNK_HEADER, ...Array.from({ length: DIRECT_ALIGN / ALIGN_STEP }, (_, i) => i * ALIGN_STEP)]) {
    try {
      fs.writeSync(fd, ring, align, DIRECT_ALIGN, 0);
      return { fd, align };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') break;
    }
  }
  fs.closeSync(fd);
  return null;
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
    private readonly hasher: RingHasher,
    private direct: Direct | null,
  ) {
    const base = direct?.align ?? 0;
    this.slots = Array.from({ length: SLOTS }, (_, i) => {
      const offset = base + i * SLOT_BYTES;
      return { buf: Buffer.from(ring, offset, SLOT_BYTES), offset, used: 0, busy: null };
    });
  }

  /** Whether full slots still go straight to the disk. */
  get directWrites(): boolean {
    return this.direct !== null;
  }

  /**
   * One slot's bytes at `at`: a full slot (aligned in memory, in the file and in
   * length) by a direct write while they are taken, anything else, or the rest
   * of a short direct write, through the page cache. A direct write refused
   * with EINVAL turns direct writes off for the rest of the archive.
   */
  private async writeSlot(s: Slot, at: number, len: number): Promise<void> {
    let done = 0;
    if (this.direct && len === SLOT_BYTES) {
      try {
        done = (await write(this.direct.fd, s.buf, 0, len, at)).bytesWritten;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
        this.direct = null;
      }
    }
    while (done < len) done += (await write(this.fd, s.buf, done, len - done, at + done)).bytesWritten;
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
    // One write at a time, in order: concurrent writes to one file only queue on its inode lock (spinning, as system CPU).
    const written = this.lastWrite.then(() => this.writeSlot(s, at, len));
    this.lastWrite = written.catch(() => undefined);
    s.busy = Promise.all([written, this.hasher.update(s.offset, len)]).then(
      () => undefined,
      (err: unknown) => {
        this.error ??= err;
      },
    );
    this.cur = (this.cur + 1) % SLOTS;
    // Start the disk write-back of what the page cache holds so far; one at a time, never awaited here.
    if (!this.direct && !this.syncing && this.pos - this.syncedTo >= SYNC_EVERY) {
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
    // An archive shorter than the alignment probe's block would keep the probe's tail.
    await ftruncate(this.fd, this.pos);
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
  /** Whether the full slots went straight to the disk to the end (O_DIRECT), rather than through the page cache. */
  direct: boolean;
}

export interface WriteTarOptions {
  /** Try direct writes (default true); false writes through the page cache only. */
  direct?: boolean;
  /** The bytes of file data the caller expects (from its walk): a small archive is hashed on this thread (ring-hash.ts). */
  expectedBytes?: number;
}

/**
 * Writes `entries` (paths relative to `cwd`: directories, regular files; a file seen twice
 * through a hard link is written as a link to its first path, as node-tar does) into `file`,
 * fsynced before this returns. Mtimes, ownership and pax headers as node-tar writes them
 * (not portable): restores are metadata faithful.
 */
export async function writeTar(file: string, cwd: string, entries: string[], opts: WriteTarOptions = {}): Promise<WrittenArchive> {
  const { Header, Pax } = await loadTar();
  // DIRECT_ALIGN more than the slots at least: room to start them on an aligned address (see RING_BYTES).
  const ring = new SharedArrayBuffer(RING_BYTES);
  const hasher = ringHasher(ring, opts.expectedBytes);
  const myuid = process.getuid?.() ?? 0;
  const myuser = process.env.USER ?? '';
  const links = new Map<string, string>();
  let fd: number | null = null;
  let direct: Direct | null = null;
  let sink: Sink | null = null;
  try {
    fd = await open(file, 'w', 0o600);
    direct = openDirect(file, Buffer.from(ring), opts.direct ?? true);
    sink = new Sink(fd, ring, hasher, direct);
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
    return { sha256, size, direct: sink.directWrites };
  } finally {
    await sink?.drain().catch(() => undefined);
    if (direct) await close(direct.fd).catch(() => undefined);
    if (fd !== null) await close(fd).catch(() => undefined);
    await hasher.close();
  }
}
