/**
 * The crash-safe journal: SQLite in WAL mode with synchronous=FULL, so a
 * committed transition survives kill -9 and power loss. It holds every command
 * (id, digest, payload, state, context, result), every transition, the
 * single-row lock that serialises the daemon and operator CLI, and the backup
 * catalogue.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { CodedError, type Command, type Result } from '@guts-upgrade/protocol';
import { processAlive, processStartTime } from './process-identity.js';
import { canTransition, type State } from './state.js';

export interface CommandRow {
  id: string;
  digest: string;
  kind: Command['kind'];
  payload: Command;
  state: State;
  context: Record<string, unknown>;
  result: Result | null;
  createdAt: string;
  updatedAt: string;
}

export interface BackupRow {
  id: string;
  createdAt: string;
  commandId: string | null;
  version: string | null;
  status: 'partial' | 'complete';
  meta: BackupMeta;
}

export interface ArchiveEntry {
  file: string;
  sha256: string;
  size: number;
}
export interface BackupMeta {
  binary?: ArchiveEntry;
  config?: ArchiveEntry;
  dataBase?: ArchiveEntry;
  dataDelta?: ArchiveEntry;
  /** Files removed between the base copy and the seal: delete them after extracting base + delta. */
  deleted?: string[];
  /** Final file list (relative path -> size) of the data dir, to check a restore. */
  files?: Record<string, number>;
  dataDir?: string;
  binaryPath?: string;
  configPath?: string;
  sealed?: boolean;
}

const now = () => new Date().toISOString();

export class Journal {
  readonly db: Database.Database;

  constructor(stateDir: string) {
    fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    // The journal holds command history, artifact URLs and the backup catalogue: root's
    // alone, also when the directory or file came from an older, laxer install.
    fs.chmodSync(stateDir, 0o700);
    const file = path.join(stateDir, 'journal.sqlite');
    if (!fs.existsSync(file)) fs.closeSync(fs.openSync(file, 'a', 0o600));
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    // SQLite gives its -wal and -shm files the database file's mode, so 0600 carries over.
    for (const f of [file, `${file}-wal`, `${file}-shm`]) if (fs.existsSync(f)) fs.chmodSync(f, 0o600);
    this.db.pragma('synchronous = FULL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS commands (
        id TEXT PRIMARY KEY, digest TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
        state TEXT NOT NULL, context TEXT NOT NULL DEFAULT '{}', result TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL, finished_at TEXT);
      CREATE TABLE IF NOT EXISTS transitions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, command_id TEXT NOT NULL, from_state TEXT, to_state TEXT NOT NULL,
        at TEXT NOT NULL, detail TEXT);
      CREATE TABLE IF NOT EXISTS lock (
        id INTEGER PRIMARY KEY CHECK (id = 1), command_id TEXT NOT NULL, pid INTEGER NOT NULL,
        pid_start TEXT, acquired_at TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS backups (
        id TEXT PRIMARY KEY, created_at TEXT NOT NULL, command_id TEXT, version TEXT,
        status TEXT NOT NULL, meta TEXT NOT NULL);
    `);
  }

  close(): void {
    this.statements.clear();
    this.db.close();
  }

  // Each statement is compiled once and kept: the daemon runs the same few for its whole life,
  // and a statement prepared per call is garbage the GC must finalize (native memory, CPU).
  private readonly statements = new Map<string, Database.Statement>();

  private statement(sql: string): Database.Statement {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.statements.set(sql, st);
    }
    return st;
  }

  private row(r: Record<string, unknown> | undefined): CommandRow | null {
    if (!r) return null;
    return {
      id: r.id as string,
      digest: r.digest as string,
      kind: r.kind as Command['kind'],
      payload: JSON.parse(r.payload as string) as Command,
      state: r.state as State,
      context: JSON.parse(r.context as string) as Record<string, unknown>,
      result: r.result ? (JSON.parse(r.result as string) as Result) : null,
      createdAt: r.created_at as string,
      updatedAt: r.updated_at as string,
    };
  }

  get(id: string): CommandRow | null {
    return this.row(this.statement('SELECT * FROM commands WHERE id = ?').get(id) as Record<string, unknown> | undefined);
  }

  /** Who holds the lock, and whether that process is still alive. */
  lockHolder(): { commandId: string; pid: number; alive: boolean; acquiredAt: string } | null {
    const r = this.statement('SELECT * FROM lock WHERE id = 1').get() as Record<string, unknown> | undefined;
    if (!r) return null;
    const pid = r.pid as number;
    return { commandId: r.command_id as string, pid, alive: processAlive(pid, r.pid_start as string | null), acquiredAt: r.acquired_at as string };
  }

  /**
   * Atomically: refuse when a live process holds the lock (E_BUSY), else take
   * it and record the command in state `received`. A stale lock (dead owner)
   * must be recovered first; callers run recovery before accepting commands.
   */
  begin(command: Command, digest: string): CommandRow {
    const tx = this.db.transaction(() => {
      const t = this.takeLock(command.id);
      this.statement(`INSERT INTO commands (id, digest, kind, payload, state, context, created_at, updated_at)
        VALUES (?, ?, ?, ?, 'received', '{}', ?, ?)`).run(command.id, digest, command.kind, JSON.stringify(command), t, t);
      this.statement('INSERT INTO transitions (command_id, from_state, to_state, at) VALUES (?, NULL, ?, ?)').run(command.id, 'received', t);
    });
    tx.immediate();
    return this.get(command.id)!;
  }

  /** The lock for an operator operation that is not a protocol command (backup create/restore). */
  acquire(opId: string): void {
    this.db.transaction(() => this.takeLock(opId)).immediate();
  }

  /** Inside a transaction: E_BUSY if anyone holds the lock, else take it for `id`; returns the time taken. */
  private takeLock(id: string): string {
    const holder = this.lockHolder();
    if (holder) {
      throw new CodedError(
        'E_BUSY',
        holder.alive ? `command ${holder.commandId} is running (pid ${holder.pid})` : `command ${holder.commandId} was interrupted and must be recovered first`,
        { commandId: holder.commandId },
      );
    }
    const t = now();
    this.statement('INSERT INTO lock (id, command_id, pid, pid_start, acquired_at) VALUES (1, ?, ?, ?, ?)').run(
      id,
      process.pid,
      processStartTime(process.pid),
      t,
    );
    return t;
  }

  release(opId: string): void {
    this.statement('DELETE FROM lock WHERE id = 1 AND command_id = ?').run(opId);
  }

  /** Makes this process the owner of a lock whose owner died, so recovery runs under it. */
  takeOverStaleLock(commandId: string): void {
    this.statement('UPDATE lock SET pid = ?, pid_start = ? WHERE id = 1 AND command_id = ?').run(process.pid, processStartTime(process.pid), commandId);
  }

  transition(id: string, to: State, detail?: string): void {
    const tx = this.db.transaction(() => {
      const cur = this.get(id);
      if (!cur) throw new CodedError('E_INTERNAL', `no command ${id}`);
      if (cur.state === to) return;
      if (!canTransition(cur.state, to)) throw new CodedError('E_INTERNAL', `illegal transition ${cur.state} -> ${to} for ${id}`);
      const t = now();
      this.statement('UPDATE commands SET state = ?, updated_at = ? WHERE id = ?').run(to, t, id);
      this.statement('INSERT INTO transitions (command_id, from_state, to_state, at, detail) VALUES (?, ?, ?, ?, ?)').run(id, cur.state, to, t, detail ?? null);
    });
    tx.immediate();
  }

  setContext(id: string, patch: Record<string, unknown>): void {
    const tx = this.db.transaction(() => {
      const cur = this.get(id);
      if (!cur) return;
      this.statement('UPDATE commands SET context = ?, updated_at = ? WHERE id = ?').run(JSON.stringify({ ...cur.context, ...patch }), now(), id);
    });
    tx.immediate();
  }

  /** Stores the result and releases the lock in one transaction. */
  finish(id: string, result: Result): void {
    const tx = this.db.transaction(() => {
      this.statement('UPDATE commands SET result = ?, finished_at = ?, updated_at = ? WHERE id = ?').run(JSON.stringify(result), now(), now(), id);
      this.statement('DELETE FROM lock WHERE id = 1 AND command_id = ?').run(id);
    });
    tx.immediate();
  }

  transitions(id: string): { from: State | null; to: State; at: string; detail: string | null }[] {
    return (this.statement('SELECT * FROM transitions WHERE command_id = ? ORDER BY seq').all(id) as Record<string, unknown>[]).map((r) => ({
      from: r.from_state as State | null,
      to: r.to_state as State,
      at: r.at as string,
      detail: r.detail as string | null,
    }));
  }

  recentResults(limit = 20): Result[] {
    return (this.statement('SELECT result FROM commands WHERE result IS NOT NULL ORDER BY finished_at DESC LIMIT ?').all(limit) as { result: string }[]).map(
      (r) => JSON.parse(r.result) as Result,
    );
  }

  /**
   * Finished commands by kind and outcome, over the whole journal (it is never pruned),
   * so the metrics built from them are counters that survive an agent restart.
   */
  resultCounts(): { kind: string; outcome: string; count: number }[] {
    return this.statement(
      "SELECT kind, json_extract(result, '$.outcome') AS outcome, COUNT(*) AS count FROM commands WHERE result IS NOT NULL GROUP BY 1, 2",
    ).all() as { kind: string; outcome: string; count: number }[];
  }

  /** The latest result that measured a downtime (the node was stopped), if any. */
  lastDowntime(): Result | null {
    const r = this.statement("SELECT result FROM commands WHERE json_extract(result, '$.downtimeMs') IS NOT NULL ORDER BY finished_at DESC LIMIT 1").get() as
      | { result: string }
      | undefined;
    return r ? (JSON.parse(r.result) as Result) : null;
  }

  /** The last upgrade that committed, for the rollback command. */
  lastCommittedUpgrade(): CommandRow | null {
    const r = this.statement(`SELECT * FROM commands WHERE kind = 'upgrade' AND state = 'succeeded' ORDER BY finished_at DESC LIMIT 1`).get() as
      | Record<string, unknown>
      | undefined;
    return this.row(r);
  }

  /** Whether a rollback command already undid that upgrade. */
  rolledBackBy(upgradeId: string): string | null {
    const rows = this.statement(`SELECT id, context FROM commands WHERE kind = 'rollback' AND state = 'succeeded'`).all() as { id: string; context: string }[];
    for (const r of rows) if ((JSON.parse(r.context) as { upgradeId?: string }).upgradeId === upgradeId) return r.id;
    return null;
  }

  // ------------------------------------------------------------ backups

  putBackup(b: BackupRow): void {
    this.statement(`INSERT INTO backups (id, created_at, command_id, version, status, meta) VALUES (?, ?, ?, ?, ?, ?)
      ON CONFLICT(id) DO UPDATE SET status = excluded.status, meta = excluded.meta, version = excluded.version`).run(
      b.id,
      b.createdAt,
      b.commandId,
      b.version,
      b.status,
      JSON.stringify(b.meta),
    );
  }

  private backupRow(r: Record<string, unknown> | undefined): BackupRow | null {
    if (!r) return null;
    return {
      id: r.id as string,
      createdAt: r.created_at as string,
      commandId: (r.command_id as string | null) ?? null,
      version: (r.version as string | null) ?? null,
      status: r.status as BackupRow['status'],
      meta: JSON.parse(r.meta as string) as BackupMeta,
    };
  }

  getBackup(id: string): BackupRow | null {
    return this.backupRow(this.statement('SELECT * FROM backups WHERE id = ?').get(id) as Record<string, unknown> | undefined);
  }

  listBackups(): BackupRow[] {
    return (this.statement('SELECT * FROM backups ORDER BY created_at DESC, id DESC').all() as Record<string, unknown>[]).map((r) => this.backupRow(r)!);
  }

  deleteBackup(id: string): void {
    this.statement('DELETE FROM backups WHERE id = ?').run(id);
  }
}
