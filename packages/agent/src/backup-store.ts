/**
 * Backups as plain tar archives (written by tar-writer.ts, read back by node-tar; GNU `tar -xf` reads them too):
 *
 *   <backup.dir>/<id>/binary.tar   the guts-node binary (entry: its basename)
 *   <backup.dir>/<id>/config.tar   the node config file (entry: its basename)
 *   <backup.dir>/<id>/data-base.tar   the data dir, copied while the node runs
 *   <backup.dir>/<id>/data-delta.tar  files changed since the base, taken after stop
 *
 * Data entries are relative to the data dir. Restore = extract base, extract
 * delta over it, delete `deleted` (files gone since the base). The catalogue
 * (journal table `backups`) keeps each archive's sha256, checked before restore
 * together with every path the catalogue and the archives name (backup-paths.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { CodedError } from '@guts-upgrade/protocol';
import type { AgentConfig } from './config.js';
import type { ArchiveEntry, BackupMeta, BackupRow, Journal } from './journal.js';
import { checkCatalogue, inside, inspectArchive, unsafe, type RestoreTargets } from './backup-paths.js';
import { loadTar, writeTar } from './tar-writer.js';
import { copyFileAtomic, fsyncPath } from './util.js';

interface Stamp {
  size: number;
  mtime: string;
  ctime: string;
  ino: string;
}
type Snapshot = { files: Record<string, Stamp>; dirs: string[] };

function walk(root: string): Snapshot {
  const snap: Snapshot = { files: {}, dirs: [] };
  const visit = (rel: string) => {
    const abs = path.join(root, rel);
    for (const e of fs.readdirSync(abs, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        snap.dirs.push(r);
        visit(r);
      } else if (e.isFile()) {
        try {
          const st = fs.statSync(path.join(root, r), { bigint: true });
          snap.files[r] = { size: Number(st.size), mtime: String(st.mtimeNs), ctime: String(st.ctimeNs), ino: String(st.ino) };
        } catch {
          /* vanished while walking: not part of this snapshot */
        }
      }
    }
  };
  visit('');
  return snap;
}

/** The bytes of `files` as the walk saw them. */
function sizeOf(snap: Snapshot, files: string[]): number {
  return files.reduce((sum, f) => sum + (snap.files[f]?.size ?? 0), 0);
}

function same(a: Stamp | undefined, b: Stamp | undefined): boolean {
  return !!a && !!b && a.size === b.size && a.mtime === b.mtime && a.ctime === b.ctime && a.ino === b.ino;
}

/** A data dir swapped in by a restore, with the one it replaced still kept beside it. */
export interface DataSwap {
  /** Where the replaced data dir waits (null: there was none). */
  readonly previous: string | null;
  /** Keeps the restored data: removes the replaced dir. */
  commit(): void;
  /** Puts the replaced data dir back in place of the restored one. */
  undo(): void;
}

export class BackupStore {
  constructor(
    private readonly config: AgentConfig,
    private readonly journal: Journal,
  ) {}

  dirOf(id: string): string {
    return path.join(this.config.backup.dir, id);
  }

  /** One file (the binary, the config) in an archive of its own. */
  private archiveFile(id: string, name: string, file: string): Promise<ArchiveEntry> {
    let bytes: number | undefined;
    try {
      bytes = fs.statSync(file).size;
    } catch {
      // unknown: archive() reports the failure
    }
    return this.archive(id, name, path.dirname(file), [path.basename(file)], bytes);
  }

  /**
   * `leaveOut`, for the base copy taken while the node runs: a file that shrinks while it is
   * read (truncated, rewritten) fails the archive with code EOF; it is left out of the base and
   * the delta after stop archives it, since it is then missing from the base snapshot. (A file
   * that grows is archived at the size it had when its header was written; its stamp differs
   * from the snapshot's at seal, so the delta holds it whole.) `bytes`: the file data the
   * caller's walk expects in it (a small archive skips the hashing thread's start).
   */
  private async archive(
    id: string,
    name: string,
    cwd: string,
    entries: string[],
    bytes: number | undefined,
    leaveOut?: (rel: string) => void,
  ): Promise<ArchiveEntry> {
    const file = path.join(this.dirOf(id), name);
    let lastErr: unknown;
    // A file rewritten while it is read (the node keeps running during the base copy) can fail
    // the archive; a retry reads it again, and the delta picks up whatever changed anyway.
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const { sha256, size } = await writeTar(file, cwd, entries, { expectedBytes: bytes });
        fsyncPath(path.dirname(file));
        return { file: name, sha256, size };
      } catch (err) {
        lastErr = err;
        const e = err as NodeJS.ErrnoException;
        const rel = e.code === 'EOF' && e.path ? path.relative(cwd, e.path) : null;
        if (leaveOut && rel && entries.includes(rel)) {
          entries = entries.filter((x) => x !== rel);
          leaveOut(rel);
          attempt--; // each file is left out at most once, so this ends
          continue;
        }
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOSPC' || code === 'EROFS' || code === 'EACCES' || code === 'EDQUOT' || code === 'ENOTDIR' || code === 'EIO') break;
      }
    }
    try {
      fs.unlinkSync(file);
    } catch {
      /* nothing written */
    }
    throw new CodedError('E_BACKUP', `cannot write ${file}: ${(lastErr as Error).message}`, { errno: (lastErr as NodeJS.ErrnoException).code });
  }

  private snapshotFile(id: string): string {
    return path.join(this.dirOf(id), 'base-snapshot.json');
  }

  /**
   * Binary, config and a base copy of the data dir while the node runs.
   * Idempotent per id: a partial backup with the same id is discarded and redone.
   */
  async createBase(id: string, commandId: string | null, version: string | null): Promise<BackupRow> {
    const c = this.config;
    const dir = this.dirOf(id);
    try {
      fs.rmSync(dir, { recursive: true, force: true });
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      fsyncPath(path.dirname(dir));
    } catch (err) {
      throw new CodedError('E_BACKUP', `cannot create backup dir ${dir}: ${(err as Error).message}`);
    }
    const row: BackupRow = {
      id,
      createdAt: new Date().toISOString(),
      commandId,
      version,
      status: 'partial',
      meta: { dataDir: c.node.dataDir, binaryPath: c.node.binary, configPath: c.node.config },
    };
    this.journal.putBackup(row);
    const meta = row.meta;
    // On a container host the previous image stays in the engine (rollback goes back to it by id): no binary file to keep.
    const containerHost = c.service.driver === 'docker' || c.service.driver === 'compose';
    if (!containerHost) meta.binary = await this.archiveFile(id, 'binary.tar', c.node.binary);
    if (fs.existsSync(c.node.config)) meta.config = await this.archiveFile(id, 'config.tar', c.node.config);
    const snap = walk(c.node.dataDir);
    meta.dataBase = await this.archive(
      id,
      'data-base.tar',
      c.node.dataDir,
      [...snap.dirs, ...Object.keys(snap.files)],
      sizeOf(snap, Object.keys(snap.files)),
      (rel) => {
        delete snap.files[rel];
      },
    );
    try {
      fs.writeFileSync(this.snapshotFile(id), JSON.stringify(snap));
      fsyncPath(this.snapshotFile(id));
    } catch (err) {
      throw new CodedError('E_BACKUP', `cannot write backup snapshot: ${(err as Error).message}`);
    }
    this.journal.putBackup(row);
    return row;
  }

  /** After the node stopped: archive what changed since the base and mark the backup complete. */
  async seal(id: string): Promise<BackupRow> {
    const row = this.journal.getBackup(id);
    if (!row) throw new CodedError('E_BACKUP', `no backup ${id}`);
    if (row.status === 'complete') return row;
    const base = JSON.parse(fs.readFileSync(this.snapshotFile(id), 'utf8')) as Snapshot;
    const dataDir = row.meta.dataDir ?? this.config.node.dataDir;
    const now = walk(dataDir);
    const changed = Object.keys(now.files).filter((f) => !same(now.files[f], base.files[f]));
    const baseDirs = new Set(base.dirs);
    const newDirs = now.dirs.filter((d) => !baseDirs.has(d));
    const meta: BackupMeta = { ...row.meta };
    if (changed.length || newDirs.length) {
      meta.dataDelta = await this.archive(id, 'data-delta.tar', dataDir, [...newDirs, ...changed], sizeOf(now, changed));
    }
    const nowDirs = new Set(now.dirs);
    meta.deleted = [
      ...Object.keys(base.files).filter((f) => !(f in now.files)),
      ...base.dirs
        .filter((d) => !nowDirs.has(d))
        .sort()
        .reverse(),
    ];
    meta.files = Object.fromEntries(Object.entries(now.files).map(([f, s]) => [f, s.size]));
    meta.sealed = true;
    const done: BackupRow = { ...row, status: 'complete', meta };
    this.journal.putBackup(done);
    return done;
  }

  /** An online backup (no stop): base + immediate seal; consistent only as far as the node's own writes are atomic. */
  async createOnline(id: string, version: string | null): Promise<BackupRow> {
    await this.createBase(id, null, version);
    const row = await this.seal(id);
    await this.applyRetention();
    return row;
  }

  /** The configured paths a restore writes to (a catalogue row may only name these). */
  private targets(): RestoreTargets {
    return { dataDir: this.config.node.dataDir, binary: this.config.node.binary, config: this.config.node.config };
  }

  private async verifyArchive(id: string, entry: ArchiveEntry | undefined): Promise<void> {
    if (!entry) return;
    let seen: Awaited<ReturnType<typeof inspectArchive>>;
    try {
      seen = await inspectArchive(path.join(this.dirOf(id), entry.file));
    } catch (err) {
      throw new CodedError('E_RESTORE', `backup ${id}: cannot read ${entry.file}: ${(err as Error).message}`);
    }
    if (seen.sha256 !== entry.sha256)
      throw new CodedError('E_RESTORE', `backup ${id}: ${entry.file} checksum mismatch (catalogue ${entry.sha256}, file ${seen.sha256})`);
    if (seen.problem) throw unsafe(id, 'archive', entry.file, `has a ${seen.problem}`);
  }

  /**
   * A backup fit to restore: complete, its archives as catalogued, and every path
   * it names inside where it may write (E_RESTORE_UNSAFE otherwise). Reads only.
   */
  async verify(id: string): Promise<BackupRow> {
    const row = this.journal.getBackup(id);
    if (!row) throw new CodedError('E_RESTORE', `no backup ${id}`);
    if (row.status !== 'complete') throw new CodedError('E_RESTORE', `backup ${id} is incomplete`);
    checkCatalogue(row, this.targets());
    for (const e of [row.meta.binary, row.meta.config, row.meta.dataBase, row.meta.dataDelta]) await this.verifyArchive(id, e);
    return row;
  }

  /** Restores the data dir for good (the rollback path); see swapInData. */
  async restoreData(id: string): Promise<void> {
    (await this.swapInData(id)).commit();
  }

  /**
   * Extracts the data into a sibling, checks it against the catalogue, then swaps
   * it in. The data dir it replaces is kept beside it until the swap is committed
   * or undone, so a restore that fails later (the node does not start) can put
   * it back. On failure here the data dir is as it was.
   */
  async swapInData(id: string): Promise<DataSwap> {
    const row = await this.verify(id);
    const dataDir = this.config.node.dataDir;
    const tmp = `${dataDir}.restore-${id}`;
    const old = `${dataDir}.replaced-${id}`;
    let hadDir = false;
    try {
      fs.rmSync(tmp, { recursive: true, force: true });
      fs.mkdirSync(tmp, { recursive: true, mode: 0o700 });
      const tar = await loadTar();
      await tar.x({ file: path.join(this.dirOf(id), row.meta.dataBase!.file), cwd: tmp, preservePaths: false });
      if (row.meta.dataDelta) await tar.x({ file: path.join(this.dirOf(id), row.meta.dataDelta.file), cwd: tmp, preservePaths: false });
      for (const d of row.meta.deleted ?? []) fs.rmSync(inside(tmp, d, id, 'deleted entry'), { recursive: true, force: true });
      const got = walk(tmp).files;
      for (const [f, size] of Object.entries(row.meta.files ?? {})) {
        if (!got[f] || got[f].size !== size) throw new Error(`restored ${f} does not match the catalogue`);
      }
      for (const f of Object.keys(got)) if (!(f in (row.meta.files ?? {}))) throw new Error(`restored ${f} is not in the catalogue`);
      fs.rmSync(old, { recursive: true, force: true });
      // The node may run as another user (guts): the restored dir keeps the owner and mode of the one it replaces.
      if (fs.existsSync(dataDir)) {
        const st = fs.statSync(dataDir);
        fs.chmodSync(tmp, st.mode & 0o7777);
        if (process.getuid?.() === 0) fs.chownSync(tmp, st.uid, st.gid);
        fs.renameSync(dataDir, old);
        hadDir = true;
      }
      fs.renameSync(tmp, dataDir);
      fsyncPath(path.dirname(dataDir));
    } catch (err) {
      // Never leave the data dir missing: put the previous one back if the swap failed half way.
      if (!fs.existsSync(dataDir) && fs.existsSync(old)) fs.renameSync(old, dataDir);
      fs.rmSync(tmp, { recursive: true, force: true });
      if (err instanceof CodedError) throw err;
      throw new CodedError('E_RESTORE', `restore of ${id} into ${dataDir} failed: ${(err as Error).message}`);
    }
    return {
      previous: hadDir ? old : null,
      commit: () => fs.rmSync(old, { recursive: true, force: true }),
      undo: () => {
        fs.rmSync(dataDir, { recursive: true, force: true });
        if (hadDir) fs.renameSync(old, dataDir);
        fsyncPath(path.dirname(dataDir));
      },
    };
  }

  /** Restores the binary from binary.tar, atomically. */
  async restoreBinary(id: string): Promise<void> {
    const row = await this.verify(id);
    // A container host's backup holds no binary: the release is the container's image, which a restore leaves as it is.
    if (!row.meta.binary) return;
    const target = this.config.node.binary;
    const tar = await loadTar();
    const tmp = fs.mkdtempSync(path.join(this.dirOf(id), 'x-'));
    try {
      await tar.x({ file: path.join(this.dirOf(id), row.meta.binary!.file), cwd: tmp });
      copyFileAtomic(path.join(tmp, path.basename(target)), target, 0o755);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }

  async restoreConfig(id: string): Promise<void> {
    const row = await this.verify(id);
    if (!row.meta.config) return;
    const target = this.config.node.config;
    const tar = await loadTar();
    const tmp = fs.mkdtempSync(path.join(this.dirOf(id), 'x-'));
    try {
      await tar.x({ file: path.join(this.dirOf(id), row.meta.config.file), cwd: tmp });
      copyFileAtomic(path.join(tmp, path.basename(target)), target, 0o644);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }

  discard(id: string): void {
    fs.rmSync(this.dirOf(id), { recursive: true, force: true });
    this.journal.deleteBackup(id);
  }

  list(): BackupRow[] {
    return this.journal.listBackups();
  }

  /** Keeps the newest `retention` complete backups, plus any a committed upgrade still needs for rollback. */
  async applyRetention(): Promise<string[]> {
    const keep = new Set<string>();
    const last = this.journal.lastCommittedUpgrade();
    const pinned = last?.context.backupId;
    if (typeof pinned === 'string') keep.add(pinned);
    const removed: string[] = [];
    let kept = 0;
    for (const b of this.journal.listBackups()) {
      if (b.status !== 'complete') {
        // A partial backup belongs to a command that failed or is running; the lock holder keeps its own.
        const holder = this.journal.lockHolder();
        if (holder && b.commandId === holder.commandId) continue;
        this.discard(b.id);
        removed.push(b.id);
        continue;
      }
      if (keep.has(b.id)) continue;
      if (kept < this.config.backup.retention) {
        kept++;
        continue;
      }
      this.discard(b.id);
      removed.push(b.id);
    }
    return removed;
  }
}

export function newBackupId(): string {
  return `b-${new Date().toISOString().replace(/[-:.]/g, '').replace('T', '-').replace('Z', '')}-${Math.random().toString(16).slice(2, 6)}`;
}
