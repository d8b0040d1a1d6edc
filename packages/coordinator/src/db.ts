/**
 * SQLite state (WAL, synchronous FULL so that an acknowledged write survives a
 * kill -9 or power cut). Everything the sequencer needs to resume lives here:
 * nodes, rollouts, per-node steps, every command sent (written before it goes
 * on the wire, so a crash re-sends the same id) and the append-only event log.
 */
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import type { CommandKind, ErrorCode, FailureEvidence, NodeRole, Outcome, Result } from '@guts-upgrade/protocol';
import type { CommandRecord, CommandState, Rollout, RolloutData, Step } from './model.js';
import { CommandMirror, RolloutMirror, StepMirror } from './row-mirror.js';
import { COMMAND_OPEN_STATES, isCommandFinished, type RolloutState, type StepState } from './states.js';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** Append only: a released migration is never edited, a change is a new version. */
export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'initial',
    sql: `
      CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL,
        address TEXT,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER,
        agent_version TEXT,
        version TEXT,
        health TEXT NOT NULL DEFAULT 'unknown',
        ready INTEGER NOT NULL DEFAULT 0,
        is_leader INTEGER NOT NULL DEFAULT 0,
        current_leader TEXT,
        finalized_height INTEGER,
        view INTEGER,
        peer_count INTEGER,
        busy TEXT,
        last_seen_at INTEGER
      );
      CREATE TABLE rollouts (
        id TEXT PRIMARY KEY,
        strategy TEXT NOT NULL,
        target TEXT NOT NULL,
        from_version TEXT,
        path_kind TEXT NOT NULL,
        options TEXT NOT NULL,
        state TEXT NOT NULL,
        code TEXT,
        reason TEXT,
        nodes TEXT NOT NULL,
        waves TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}',
        created_by TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        state_since INTEGER NOT NULL
      );
      CREATE INDEX rollouts_state ON rollouts(state);
      CREATE TABLE steps (
        rollout_id TEXT NOT NULL REFERENCES rollouts(id),
        node_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        state TEXT NOT NULL,
        command_id TEXT,
        attempt INTEGER NOT NULL DEFAULT 0,
        from_version TEXT,
        code TEXT,
        message TEXT,
        downtime_ms REAL,
        dispatch_seq INTEGER,
        started_at INTEGER,
        result_at INTEGER,
        synced_at INTEGER,
        finished_at INTEGER,
        updated_at INTEGER NOT NULL,
        progress TEXT,
        PRIMARY KEY (rollout_id, node_id)
      );
      CREATE TABLE commands (
        id TEXT PRIMARY KEY,
        node_id TEXT NOT NULL,
        rollout_id TEXT,
        kind TEXT NOT NULL,
        digest TEXT NOT NULL,
        body TEXT NOT NULL,
        state TEXT NOT NULL,
        outcome TEXT,
        code TEXT,
        message TEXT,
        running_version TEXT,
        downtime_ms REAL,
        result TEXT,
        created_at INTEGER NOT NULL,
        sent_at INTEGER,
        updated_at INTEGER NOT NULL
      );
      CREATE INDEX commands_open ON commands(node_id, state);
      CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        type TEXT NOT NULL,
        rollout_id TEXT,
        node_id TEXT,
        data TEXT NOT NULL DEFAULT '{}'
      );
      CREATE INDEX events_rollout ON events(rollout_id, seq);
      CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
      CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    `,
  },
  {
    version: 2,
    name: 'webhook outbox',
    sql: `
      CREATE TABLE webhook_deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        hook_url TEXT NOT NULL,
        event_seq INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        body TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL,
        last_error TEXT,
        updated_at INTEGER NOT NULL
      );
      CREATE INDEX webhook_due ON webhook_deliveries(state, next_at);
    `,
  },
  {
    version: 3,
    name: 'chain validator bindings and the adopted validator set',
    sql: `
      ALTER TABLE nodes ADD COLUMN pubkey TEXT;
      CREATE UNIQUE INDEX nodes_pubkey ON nodes(pubkey) WHERE pubkey IS NOT NULL AND revoked_at IS NULL;
      CREATE TABLE chain_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        adopted TEXT,
        confirmed_digest TEXT,
        updated_at INTEGER NOT NULL
      );
    `,
  },
  {
    version: 4,
    name: 'the consensus view at which an agent last stopped its node',
    sql: 'ALTER TABLE commands ADD COLUMN stopped_at_view INTEGER;',
  },
  {
    version: 5,
    name: "a failed step's evidence: the failing check and the node's last log lines",
    sql: 'ALTER TABLE steps ADD COLUMN evidence TEXT;',
  },
  {
    version: 6,
    name: 'node role: validator, or follower (a full node outside the validator set and the safety budget)',
    // Every node registered before roles existed is a validator: the safe default, counted in the budget.
    sql: "ALTER TABLE nodes ADD COLUMN role TEXT NOT NULL DEFAULT 'validator';",
  },
  {
    version: 7,
    name: 'indexes for the lookups every agent message and every tick make',
    // Each progress message updates its step by command id, each tick reads a rollout's commands
    // and the open ones: without these, each was a scan of the whole table (at 2,000 nodes, a
    // CPU profile of the scale bench showed them as the rollout loop's largest costs).
    sql: `
      CREATE INDEX steps_command ON steps(command_id);
      CREATE INDEX commands_rollout ON commands(rollout_id);
      CREATE INDEX commands_state ON commands(state, created_at);
    `,
  },
  {
    version: 8,
    name: 'index for the rollouts with a step in flight',
    // Each tick asks which rollouts have a node in flight (a finished rollout may still wait on
    // one): without it, a scan of every step of every rollout ever run.
    sql: 'CREATE INDEX steps_state ON steps(state, rollout_id);',
  },
];

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export interface NodeRow {
  id: string;
  address: string | null;
  createdAt: number;
  revokedAt: number | null;
  agentVersion: string | null;
  version: string | null;
  health: 'up' | 'down' | 'unknown';
  ready: boolean;
  isLeader: boolean;
  currentLeader: string | null;
  finalizedHeight: number | null;
  view: number | null;
  peerCount: number | null;
  busy: { commandId: string; kind: CommandKind; step: string | null } | null;
  lastSeenAt: number | null;
  /** The chain validator (public key, hex) this node runs as; null until bound. */
  pubkey: string | null;
  /** Set at registration: a follower is outside the validator set and the safety budget. */
  role: NodeRole;
}

export interface EventRow {
  seq: number;
  at: string;
  actor: string;
  type: string;
  rolloutId: string | null;
  nodeId: string | null;
  data: Record<string, unknown>;
}

type Raw = Record<string, unknown>;
/** Every column of a command but its body and stored result (large, and not needed to decide). */
const LIGHT_COMMAND_COLUMNS =
  "id, node_id, rollout_id, kind, digest, '' AS body, state, outcome, code, message, running_version, downtime_ms, stopped_at_view, created_at, updated_at";
const json = <T>(v: unknown, d: T): T => (typeof v === 'string' ? (JSON.parse(v) as T) : d);
const num = (v: unknown): number | null => (v == null ? null : Number(v));
const str = (v: unknown): string | null => (v == null ? null : String(v));

/** Whether moving a command to `state` records when it went on the wire (SQLite takes 1/0 for booleans). */
const marksSent = (state: CommandState): number => (state === 'sent' ? 1 : 0);

function nodeFrom(r: Raw): NodeRow {
  return {
    id: String(r.id),
    address: str(r.address),
    createdAt: Number(r.created_at),
    revokedAt: num(r.revoked_at),
    agentVersion: str(r.agent_version),
    version: str(r.version),
    health: (r.health as NodeRow['health']) ?? 'unknown',
    ready: r.ready === 1,
    isLeader: r.is_leader === 1,
    currentLeader: str(r.current_leader),
    finalizedHeight: num(r.finalized_height),
    view: num(r.view),
    peerCount: num(r.peer_count),
    busy: json(r.busy, null),
    lastSeenAt: num(r.last_seen_at),
    pubkey: str(r.pubkey),
    role: r.role === 'follower' ? 'follower' : 'validator',
  };
}

function rolloutFrom(r: Raw): Rollout {
  return {
    id: String(r.id),
    strategy: r.strategy as Rollout['strategy'],
    target: json(r.target, {} as Rollout['target']),
    fromVersion: str(r.from_version),
    pathKind: r.path_kind as Rollout['pathKind'],
    options: json(r.options, {} as Rollout['options']),
    state: r.state as RolloutState,
    code: str(r.code) as ErrorCode | null,
    reason: str(r.reason),
    nodes: json(r.nodes, []),
    waves: json(r.waves, []),
    data: json(r.data, {}),
    createdBy: String(r.created_by),
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
    stateSince: Number(r.state_since),
  };
}

function stepFrom(r: Raw): Step {
  return {
    rolloutId: String(r.rollout_id),
    nodeId: String(r.node_id),
    position: Number(r.position),
    state: r.state as StepState,
    commandId: str(r.command_id),
    attempt: Number(r.attempt),
    fromVersion: str(r.from_version),
    code: str(r.code) as ErrorCode | null,
    message: str(r.message),
    downtimeMs: num(r.downtime_ms),
    dispatchSeq: num(r.dispatch_seq),
    startedAt: num(r.started_at),
    resultAt: num(r.result_at),
    syncedAt: num(r.synced_at),
    finishedAt: num(r.finished_at),
    updatedAt: Number(r.updated_at),
    progress: str(r.progress),
    evidence: json<FailureEvidence | null>(r.evidence, null),
  };
}

function commandFrom(r: Raw): CommandRecord {
  return {
    id: String(r.id),
    nodeId: String(r.node_id),
    rolloutId: str(r.rollout_id),
    kind: r.kind as CommandKind,
    digest: String(r.digest),
    body: String(r.body),
    state: r.state as CommandState,
    outcome: str(r.outcome) as Outcome | null,
    code: str(r.code) as ErrorCode | null,
    message: str(r.message),
    runningVersion: str(r.running_version),
    downtimeMs: num(r.downtime_ms),
    stoppedAtView: num(r.stopped_at_view),
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
  };
}

export class Store {
  readonly db: Database.Database;

  constructor(file: string) {
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    // FULL stays, deliberately. WAL + NORMAL would survive a kill -9 (the WAL is in the OS page
    // cache) but a power loss could drop the last commits: a command row already on the wire, or
    // the step/rollout change that a send depended on, would be gone, and the restarted coordinator
    // could decide differently (e.g. pick another node and exceed f). The throughput problem was the
    // number of commits, not their cost: agent messages are group-committed (engine.ts, tx()).
    this.db.pragma('synchronous = FULL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
    this.migrate();
  }

  /** Applies pending migrations in order, each in its own transaction. Returns the versions applied. */
  migrate(migrations: Migration[] = MIGRATIONS): number[] {
    this.db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)');
    const applied = new Set((this.db.prepare('SELECT version FROM schema_migrations').all() as { version: number }[]).map((r) => r.version));
    const known = Math.max(0, ...migrations.map((m) => m.version));
    const newest = Math.max(0, ...applied);
    if (newest > known) {
      throw new Error(`database schema version ${newest} is newer than this coordinator (${known}); refusing to run`);
    }
    const done: number[] = [];
    for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
      if (applied.has(m.version)) continue;
      this.db.transaction(() => {
        this.db.exec(m.sql);
        this.db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(m.version, m.name, Date.now());
      })();
      done.push(m.version);
    }
    return done;
  }

  private readonly stmts = new Map<string, Database.Statement>();

  /** Prepared statements are compiled once and reused (preparing costs more than running most of these). */
  private stmt(sql: string): Database.Statement {
    let st = this.stmts.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.stmts.set(sql, st);
    }
    return st;
  }

  schemaVersion(): number {
    const r = this.stmt('SELECT MAX(version) AS v FROM schema_migrations').get() as { v: number | null };
    return r.v ?? 0;
  }

  close(): void {
    this.db.close();
  }

  tx<T>(fn: () => T): T {
    try {
      return this.db.transaction(fn)();
    } catch (err) {
      // A read cached inside the transaction may show rows that were just rolled back.
      this.dropCaches();
      throw err;
    }
  }

  /**
   * Read caches of the tables the rollout loop reads whole on every tick (nodes; a rollout's
   * steps and commands, the open commands: row-mirror.ts). Each write updates them with the row
   * SQLite returns or drops them, as does a failed transaction, so they never differ from what
   * SQLite returns; SQLite stays the only state (nothing here survives a restart).
   */
  private nodesCache: NodeRow[] | null = null;
  /** Node id → its place in nodesCache (built with it). */
  private nodesIndex = new Map<string, number>();
  private readonly rolloutMirror = new RolloutMirror();
  private readonly stepMirror = new StepMirror();
  private readonly commandMirror = new CommandMirror((c) => !isCommandFinished(c.state));

  private dropCaches(): void {
    this.nodesCache = null;
    this.rolloutMirror.clear();
    this.stepMirror.clear();
    this.commandMirror.clear();
  }

  // ---------------------------------------------------------------- nodes

  insertNode(id: string, tokenHash: string, address: string | null, now: number, pubkey: string | null = null, role: NodeRole = 'validator'): void {
    this.nodesCache = null;
    const existing = this.stmt('SELECT revoked_at FROM nodes WHERE id = ?').get(id) as Raw | undefined;
    if (existing) {
      this.db
        .prepare('UPDATE nodes SET token_hash = ?, address = ?, revoked_at = NULL, created_at = ?, pubkey = ?, role = ? WHERE id = ?')
        .run(tokenHash, address, now, pubkey, role, id);
    } else {
      this.stmt('INSERT INTO nodes (id, token_hash, address, created_at, pubkey, role) VALUES (?, ?, ?, ?, ?, ?)').run(
        id,
        tokenHash,
        address,
        now,
        pubkey,
        role,
      );
    }
  }

  revokeNode(id: string, now: number): void {
    this.nodesCache = null;
    this.stmt('UPDATE nodes SET revoked_at = ? WHERE id = ?').run(now, id);
  }

  node(id: string): (NodeRow & { tokenHash: string }) | undefined {
    const r = this.stmt('SELECT * FROM nodes WHERE id = ?').get(id) as Raw | undefined;
    return r ? { ...nodeFrom(r), tokenHash: String(r.token_hash) } : undefined;
  }

  activeNodes(): NodeRow[] {
    if (!this.nodesCache) {
      this.nodesCache = (this.stmt('SELECT * FROM nodes WHERE revoked_at IS NULL ORDER BY id').all() as Raw[]).map((r) => Object.freeze(nodeFrom(r)));
      this.nodesIndex = new Map(this.nodesCache.map((n, i) => [n.id, i]));
    }
    return [...this.nodesCache];
  }

  /** Binds a node to its chain validator; the unique index refuses a key another active node holds. */
  bindNode(id: string, pubkey: string | null): void {
    this.nodesCache = null;
    this.stmt('UPDATE nodes SET pubkey = ? WHERE id = ?').run(pubkey, id);
  }

  /** The active node bound to `pubkey`, if any. */
  nodeByPubkey(pubkey: string): string | null {
    const r = this.stmt('SELECT id FROM nodes WHERE pubkey = ? AND revoked_at IS NULL').get(pubkey.toLowerCase()) as Raw | undefined;
    return r ? String(r.id) : null;
  }

  /** The validator set last adopted (JSON) and the digest an operator confirmed, if any. */
  chainState(): { adopted: string | null; confirmedDigest: string | null } {
    const r = this.stmt('SELECT adopted, confirmed_digest FROM chain_state WHERE id = 1').get() as Raw | undefined;
    return { adopted: str(r?.adopted), confirmedDigest: str(r?.confirmed_digest) };
  }

  saveChainState(adopted: string | null, confirmedDigest: string | null, now: number): void {
    this.stmt(
      `INSERT INTO chain_state (id, adopted, confirmed_digest, updated_at) VALUES (1, ?, ?, ?)
       ON CONFLICT(id) DO UPDATE SET adopted = excluded.adopted, confirmed_digest = excluded.confirmed_digest, updated_at = excluded.updated_at`,
    ).run(adopted, confirmedDigest, now);
  }

  /**
   * Every heartbeat lands here, so the cached row is replaced in place rather than the cache
   * dropped: at 2,000 agents (400 heartbeats/s) dropping it made every tick re-read the whole
   * table (a CPU profile of the scale bench put two thirds of the rollout loop's time there).
   * The row is rebuilt the way SQLite stores it (agent_version kept when none is sent, busy
   * through JSON), and only once the UPDATE changed it.
   */
  updateNodeStatus(id: string, s: Omit<NodeRow, 'id' | 'address' | 'createdAt' | 'revokedAt' | 'pubkey' | 'role'>): void {
    const busy = s.busy ? JSON.stringify(s.busy) : null;
    const r = this.stmt(
      `UPDATE nodes SET agent_version = COALESCE(?, agent_version), version = ?, health = ?, ready = ?, is_leader = ?, current_leader = ?,
         finalized_height = ?, view = ?, peer_count = ?, busy = ?, last_seen_at = ? WHERE id = ?`,
    ).run(
      s.agentVersion,
      s.version,
      s.health,
      s.ready ? 1 : 0,
      s.isLeader ? 1 : 0,
      s.currentLeader,
      s.finalizedHeight,
      s.view,
      s.peerCount,
      busy,
      s.lastSeenAt,
      id,
    );
    const at = r.changes === 1 ? this.nodesIndex.get(id) : undefined;
    if (!this.nodesCache || at === undefined) return;
    const old = this.nodesCache[at]!;
    this.nodesCache[at] = Object.freeze({ ...old, ...s, agentVersion: s.agentVersion ?? old.agentVersion, busy: json(busy, null) });
  }

  // ---------------------------------------------------------------- rollouts

  insertRollout(r: Rollout): void {
    this.stmt(
      `INSERT INTO rollouts (id, strategy, target, from_version, path_kind, options, state, code, reason, nodes, waves, data, created_by, created_at, updated_at, state_since)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      r.id,
      r.strategy,
      JSON.stringify(r.target),
      r.fromVersion,
      r.pathKind,
      JSON.stringify(r.options),
      r.state,
      r.code,
      r.reason,
      JSON.stringify(r.nodes),
      JSON.stringify(r.waves),
      JSON.stringify(r.data),
      r.createdBy,
      r.createdAt,
      r.updatedAt,
      r.stateSince,
    );
  }

  /** The rollout, frozen (the loop reads it on every tick: kept parsed, see row-mirror.ts). */
  rollout(id: string): Rollout | undefined {
    return this.rolloutMirror.rollout(id, () => {
      const r = this.stmt('SELECT * FROM rollouts WHERE id = ?').get(id) as Raw | undefined;
      return r ? rolloutFrom(r) : undefined;
    });
  }

  rollouts(limit = 100): Rollout[] {
    return (this.stmt('SELECT * FROM rollouts ORDER BY created_at DESC, id DESC LIMIT ?').all(limit) as Raw[]).map(rolloutFrom);
  }

  rolloutsInStates(states: readonly string[]): Rollout[] {
    const q = `SELECT id FROM rollouts WHERE state IN (${states.map(() => '?').join(',')}) ORDER BY created_at`;
    return (this.stmt(q).all(...states) as { id: string }[]).flatMap((r) => this.rollout(r.id) ?? []);
  }

  /** How many rollouts are in each state (states without one are absent). */
  rolloutCountsByState(): Map<RolloutState, number> {
    const rows = this.stmt('SELECT state, COUNT(*) AS n FROM rollouts GROUP BY state').all() as { state: RolloutState; n: number }[];
    return new Map(rows.map((r) => [r.state, r.n]));
  }

  setRolloutState(id: string, state: RolloutState, code: ErrorCode | null, reason: string | null, now: number): void {
    this.mirrorRollout(
      this.stmt('UPDATE rollouts SET state = ?, code = ?, reason = ?, updated_at = ?, state_since = ? WHERE id = ? RETURNING *').get(
        state,
        code,
        reason,
        now,
        now,
        id,
      ),
    );
  }

  patchRolloutData(id: string, patch: Partial<RolloutData>, now: number): void {
    const r = this.rollout(id);
    if (!r) return;
    this.mirrorRollout(
      this.stmt('UPDATE rollouts SET data = ?, updated_at = ? WHERE id = ? RETURNING *').get(JSON.stringify({ ...r.data, ...patch }), now, id),
    );
  }

  /** Puts a rollout row a write returned into the mirror. */
  private mirrorRollout(row: unknown): void {
    if (row) this.rolloutMirror.put(rolloutFrom(row as Raw));
  }

  // ---------------------------------------------------------------- steps

  insertStep(s: Step): void {
    this.stepMirror.drop(s.rolloutId);
    this.stmt('INSERT INTO steps (rollout_id, node_id, position, state, attempt, updated_at) VALUES (?, ?, ?, ?, ?, ?)').run(
      s.rolloutId,
      s.nodeId,
      s.position,
      s.state,
      s.attempt,
      s.updatedAt,
    );
  }

  steps(rolloutId: string): Step[] {
    return this.stepMirror.steps(rolloutId, () =>
      (this.stmt('SELECT * FROM steps WHERE rollout_id = ? ORDER BY position').all(rolloutId) as Raw[]).map(stepFrom),
    );
  }

  updateStep(rolloutId: string, nodeId: string, patch: Partial<Step>, now: number): void {
    const cols: Record<keyof Step, string> = {
      rolloutId: 'rollout_id',
      nodeId: 'node_id',
      position: 'position',
      state: 'state',
      commandId: 'command_id',
      attempt: 'attempt',
      fromVersion: 'from_version',
      code: 'code',
      message: 'message',
      downtimeMs: 'downtime_ms',
      dispatchSeq: 'dispatch_seq',
      startedAt: 'started_at',
      resultAt: 'result_at',
      syncedAt: 'synced_at',
      finishedAt: 'finished_at',
      updatedAt: 'updated_at',
      progress: 'progress',
      evidence: 'evidence',
    };
    const entries = Object.entries({ ...patch, updatedAt: now }).filter(([, v]) => v !== undefined);
    const sql = `UPDATE steps SET ${entries.map(([k]) => `${cols[k as keyof Step]} = ?`).join(', ')} WHERE rollout_id = ? AND node_id = ? RETURNING *`;
    const value = (v: unknown) => (v !== null && typeof v === 'object' ? JSON.stringify(v) : (v as string | number | null));
    const row = this.stmt(sql).get(...entries.map(([, v]) => value(v)), rolloutId, nodeId) as Raw | undefined;
    if (row) this.stepMirror.put(stepFrom(row));
  }

  rolloutsWithStepsIn(states: readonly string[]): string[] {
    const q = `SELECT DISTINCT rollout_id FROM steps WHERE state IN (${states.map(() => '?').join(',')})`;
    return (this.stmt(q).all(...states) as { rollout_id: string }[]).map((r) => r.rollout_id);
  }

  setProgressForCommand(commandId: string, progress: string, now: number): void {
    const rows = this.stmt('UPDATE steps SET progress = ?, updated_at = ? WHERE command_id = ? RETURNING *').all(progress, now, commandId) as Raw[];
    for (const r of rows) this.stepMirror.put(stepFrom(r));
  }

  /** Nodes held by an active rollout (for the overlap conflict check). */
  nodesInActiveRollouts(activeStates: readonly string[]): Map<string, string> {
    const m = new Map<string, string>();
    for (const r of this.rolloutsInStates(activeStates)) for (const n of r.nodes) m.set(n, r.id);
    return m;
  }

  // ---------------------------------------------------------------- commands

  insertCommand(c: Omit<CommandRecord, 'outcome' | 'code' | 'message' | 'runningVersion' | 'downtimeMs' | 'stoppedAtView'>): void {
    const row = this.stmt(
      `INSERT INTO commands (id, node_id, rollout_id, kind, digest, body, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING ${LIGHT_COMMAND_COLUMNS}`,
    ).get(c.id, c.nodeId, c.rolloutId, c.kind, c.digest, c.body, c.state, c.createdAt, c.updatedAt);
    this.mirrorCommand(row);
  }

  command(id: string): CommandRecord | undefined {
    const r = this.stmt('SELECT * FROM commands WHERE id = ?').get(id) as Raw | undefined;
    return r ? commandFrom(r) : undefined;
  }

  /**
   * A command without its body and result, for the agents' acks, progress and results (one of
   * each per message): from the open ones kept in memory, else the light columns.
   */
  commandHead(id: string): CommandRecord | undefined {
    const kept = this.commandMirror.openOne(id);
    if (kept) return kept;
    const r = this.stmt(`SELECT ${LIGHT_COMMAND_COLUMNS} FROM commands WHERE id = ?`).get(id) as Raw | undefined;
    return r ? commandFrom(r) : undefined;
  }

  /** The result an agent sent for a command, as it was received (null: none yet). */
  commandResult(id: string): Result | null {
    const r = this.stmt('SELECT result FROM commands WHERE id = ?').get(id) as { result: string | null } | undefined;
    return json<Result | null>(r?.result, null);
  }

  /** The commands of a rollout for the sequencer, without their bodies (and stored results): the loop runs this on every tick. */
  commandsFor(rolloutId: string): Map<string, CommandRecord> {
    return this.commandMirror.forRollout(rolloutId, () =>
      (this.stmt(`SELECT ${LIGHT_COMMAND_COLUMNS} FROM commands WHERE rollout_id = ?`).all(rolloutId) as Raw[]).map(commandFrom),
    );
  }

  /** Commands without a result yet: the node still counts as in flight. Bodies only for one node's (to re-send them). */
  openCommands(nodeId?: string): CommandRecord[] {
    const open = COMMAND_OPEN_STATES.map(() => '?').join(',');
    if (nodeId) {
      const rows = this.stmt(`SELECT * FROM commands WHERE node_id = ? AND state IN (${open}) ORDER BY created_at`).all(nodeId, ...COMMAND_OPEN_STATES);
      return (rows as Raw[]).map(commandFrom);
    }
    return this.commandMirror.openOnes(() =>
      (this.stmt(`SELECT ${LIGHT_COMMAND_COLUMNS} FROM commands WHERE state IN (${open}) ORDER BY created_at`).all(...COMMAND_OPEN_STATES) as Raw[]).map(
        commandFrom,
      ),
    );
  }

  /** Puts a command row a write returned (RETURNING the light columns; none: nothing matched) into the mirror. */
  private mirrorCommand(row: unknown): void {
    if (row) this.commandMirror.put(commandFrom(row as Raw));
  }

  setCommandState(id: string, state: CommandState, now: number, extra: { code?: string | null; message?: string | null } = {}): void {
    const row = this.stmt(
      `UPDATE commands SET state = ?, code = COALESCE(?, code), message = COALESCE(?, message), updated_at = ?, sent_at = CASE WHEN ? THEN ? ELSE sent_at END WHERE id = ? RETURNING ${LIGHT_COMMAND_COLUMNS}`,
    ).get(state, extra.code ?? null, extra.message ?? null, now, marksSent(state), now, id);
    this.mirrorCommand(row);
  }

  /** Moves a command to an informational state only from the given states (a late write never undoes a result). */
  advanceCommandState(id: string, state: CommandState, from: readonly CommandState[], now: number): void {
    const row = this.stmt(
      `UPDATE commands SET state = ?, updated_at = ?, sent_at = CASE WHEN ? THEN ? ELSE sent_at END WHERE id = ? AND state IN (${from.map(() => '?').join(',')}) RETURNING ${LIGHT_COMMAND_COLUMNS}`,
    ).get(state, now, marksSent(state), now, id, ...from);
    this.mirrorCommand(row);
  }

  completeCommand(
    id: string,
    r: {
      outcome: Outcome;
      code: string | null;
      message: string | null;
      runningVersion: string | null;
      downtimeMs: number | null;
      stoppedAtView: number | null;
      result: unknown;
    },
    now: number,
  ): void {
    const row = this.stmt(
      `UPDATE commands SET state = ?, outcome = ?, code = ?, message = ?, running_version = ?, downtime_ms = ?, stopped_at_view = ?, result = ?, updated_at = ? WHERE id = ? RETURNING ${LIGHT_COMMAND_COLUMNS}`,
    ).get('completed' satisfies CommandState, r.outcome, r.code, r.message, r.runningVersion, r.downtimeMs, r.stoppedAtView, JSON.stringify(r.result), now, id);
    this.mirrorCommand(row);
  }

  // ---------------------------------------------------------------- events

  appendEvent(e: { at: number; actor: string; type: string; rolloutId?: string | null; nodeId?: string | null; data?: Record<string, unknown> }): number {
    const info = this.stmt('INSERT INTO events (at, actor, type, rollout_id, node_id, data) VALUES (?, ?, ?, ?, ?, ?)').run(
      e.at,
      e.actor,
      e.type,
      e.rolloutId ?? null,
      e.nodeId ?? null,
      JSON.stringify(e.data ?? {}),
    );
    return Number(info.lastInsertRowid);
  }

  events(opts: { rolloutId?: string; after?: number; limit?: number } = {}): EventRow[] {
    const rows = opts.rolloutId
      ? this.stmt('SELECT * FROM events WHERE rollout_id = ? AND seq > ? ORDER BY seq LIMIT ?').all(opts.rolloutId, opts.after ?? 0, opts.limit ?? 1000)
      : this.stmt('SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?').all(opts.after ?? 0, opts.limit ?? 1000);
    return (rows as Raw[]).map((r) => ({
      seq: Number(r.seq),
      at: new Date(Number(r.at)).toISOString(),
      actor: String(r.actor),
      type: String(r.type),
      rolloutId: str(r.rollout_id),
      nodeId: str(r.node_id),
      data: json(r.data, {}),
    }));
  }

  // ---------------------------------------------------------------- webhook outbox

  enqueueWebhook(url: string, eventSeq: number, eventType: string, body: string, now: number): void {
    this.stmt('INSERT INTO webhook_deliveries (hook_url, event_seq, event_type, body, next_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)').run(
      url,
      eventSeq,
      eventType,
      body,
      now,
      now,
    );
  }

  dueWebhooks(now: number, limit = 20): { id: number; url: string; body: string; attempts: number; eventType: string }[] {
    return (
      this.db
        .prepare("SELECT id, hook_url, body, attempts, event_type FROM webhook_deliveries WHERE state = 'pending' AND next_at <= ? ORDER BY id LIMIT ?")
        .all(now, limit) as Raw[]
    ).map((r) => ({ id: Number(r.id), url: String(r.hook_url), body: String(r.body), attempts: Number(r.attempts), eventType: String(r.event_type) }));
  }

  markWebhook(id: number, state: 'pending' | 'delivered' | 'dead', attempts: number, nextAt: number, error: string | null, now: number): void {
    this.stmt('UPDATE webhook_deliveries SET state = ?, attempts = ?, next_at = ?, last_error = ?, updated_at = ? WHERE id = ?').run(
      state,
      attempts,
      nextAt,
      error,
      now,
      id,
    );
  }
}
