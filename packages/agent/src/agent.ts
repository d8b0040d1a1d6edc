/**
 * The agent core shared by the daemon and the operator CLI: accepts commands
 * (dedup by id + digest, one at a time across processes via the journal lock),
 * runs the pipeline, and recovers after a crash.
 */
import fs from 'node:fs';
import type { Logger } from 'pino';
import {
  CodedError,
  classifyDelivery,
  commandDigest,
  errorCodeOf,
  type Command,
  type ErrorCode,
  type NodeStatus,
  type Result,
  type StepName,
} from '@guts-upgrade/protocol';
import { unsignedWarning } from './trust-policy.js';
import { BackupStore } from './backup-store.js';
import { resolveIdentities, type Identities } from './run-as.js';
import type { AgentConfig } from './config.js';
import { Journal, type CommandRow } from './journal.js';
import { NodeClient } from './node-client.js';
import { buildResult, failureOf, failUntouched, finalizeBlueGreen, rollBackAfter, runRollbackCommand, runUpgrade } from './pipeline.js';
import { carryOn, type AfterJournal } from './pause-hook.js';
import { createDriver, type ServiceDriver } from './service/driver.js';
import { isTerminal, RECOVERY, type State } from './state.js';
import type { ProgressEvent, StepContext, UpgradeData } from './steps/context.js';
import { isoNow } from './util.js';

export const AGENT_VERSION = '0.1.0';

export interface Listener {
  progress?(ev: ProgressEvent): void;
  /** A command's result was stored in the journal. */
  result?(r: Result): void;
}

export type Submission =
  | { ack: 'accepted'; done: Promise<Result> }
  | { ack: 'duplicate'; result: Result | null; done: Promise<Result> | null }
  | { ack: 'rejected'; code: ErrorCode; message: string };

export class Agent {
  readonly journal: Journal;
  readonly driver: ServiceDriver;
  readonly node: NodeClient;
  readonly backups: BackupStore;
  private running: { id: string; kind: Command['kind']; step: StepName | null; done: Promise<Result> } | null = null;
  private listeners = new Set<Listener>();

  private readonly afterJournal: AfterJournal;

  /** `afterJournal`: called after each step is journaled (the crash tests' pause; nothing by default). */
  constructor(
    readonly config: AgentConfig,
    readonly log: Logger,
    opts: { afterJournal?: AfterJournal } = {},
  ) {
    this.afterJournal = opts.afterJournal ?? carryOn;
    this.journal = new Journal(config.stateDir);
    this.driver = createDriver(config);
    this.node = new NodeClient(config.node.apiUrl, config.node.metricsUrl, config.checks.httpTimeoutMs);
    this.backups = new BackupStore(config, this.journal);
    this.warnIfUnsigned();
  }

  /** Loud on purpose, at every start and command: an operator reading any log of this host sees the switch. */
  private warnIfUnsigned(): void {
    const w = unsignedWarning(this.config);
    if (w) this.log.warn({ allowUnsigned: true }, w);
  }

  close(): void {
    this.node.close();
    this.journal.close();
  }

  addListener(l: Listener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  busy(): NodeStatus['busy'] {
    if (this.running) return { commandId: this.running.id, kind: this.running.kind, step: this.running.step };
    const holder = this.journal.lockHolder();
    if (holder?.alive) {
      const row = this.journal.get(holder.commandId);
      const step = row && !isTerminal(row.state) && row.state !== 'received' ? (row.state as StepName) : null;
      return { commandId: holder.commandId, kind: row?.kind ?? 'upgrade', step };
    }
    return null;
  }

  async status(): Promise<NodeStatus> {
    return this.node.status(this.busy());
  }

  private context(row: CommandRow): StepContext {
    const data = { ...(row.context as UpgradeData) };
    const checks = [...(data.checks ?? [])];
    let identities: Promise<Identities> | undefined;
    const ctx: StepContext = {
      config: this.config,
      journal: this.journal,
      driver: this.driver,
      node: this.node,
      backups: this.backups,
      log: this.log.child({ commandId: row.id }),
      command: row.payload,
      data,
      checks,
      afterJournal: this.afterJournal,
      identities: () =>
        (identities ??= resolveIdentities(this.config, this.driver).then((ids) => {
          if (ids.asRootBecause)
            ctx.log.warn(
              { reason: ids.asRootBecause },
              'the candidate binary and its commands run as root: run guts-node under its own user, or name it as node.user',
            );
          return ids;
        })),
      save: (patch) => {
        Object.assign(data, patch);
        this.journal.setContext(row.id, patch as Record<string, unknown>);
      },
      progress: (step, state, message, percent) => {
        if (this.running?.id === row.id) this.running.step = step;
        const ev: ProgressEvent = {
          commandId: row.id,
          step,
          state,
          at: isoNow(),
          ...(message ? { message: message.slice(0, 4000) } : {}),
          ...(percent !== undefined ? { percent } : {}),
        };
        ctx.log.info({ step, state, detail: message }, `step ${step} ${state}`);
        for (const l of this.listeners) l.progress?.(ev);
      },
    };
    return ctx;
  }

  /**
   * Accepts a command: duplicate ids are acknowledged (with the stored result),
   * an id reused with other content is refused, and a second command while one
   * runs (here or in another process) is refused with E_BUSY.
   */
  async submit(command: Command): Promise<Submission> {
    const existing = this.journal.get(command.id);
    const delivery = classifyDelivery(command, existing?.digest);
    if (delivery === 'conflict') {
      return { ack: 'rejected', code: 'E_DUPLICATE_COMMAND', message: `command ${command.id} was already received with other content` };
    }
    if (delivery === 'duplicate') {
      const done = this.running?.id === command.id ? this.running.done : null;
      return { ack: 'duplicate', result: existing!.result, done };
    }
    const holder = this.journal.lockHolder();
    if (holder && !holder.alive) await this.recover();
    let row: CommandRow;
    try {
      row = this.journal.begin(command, commandDigest(command));
    } catch (err) {
      return { ack: 'rejected', code: errorCodeOf(err), message: (err as Error).message };
    }
    const done = this.execute(row);
    return { ack: 'accepted', done };
  }

  private execute(row: CommandRow): Promise<Result> {
    if (row.kind !== 'rollback') this.warnIfUnsigned();
    const ctx = this.context(row);
    const done = (async () => {
      let result: Result;
      try {
        result = row.kind === 'rollback' ? await runRollbackCommand(ctx) : await runUpgrade(ctx);
      } catch (err) {
        // A bug or an unexpected error: never leave the node half upgraded.
        ctx.log.error({ err: (err as Error).stack }, 'pipeline crashed');
        const state = this.journal.get(row.id)?.state ?? 'received';
        result =
          RECOVERY[state as keyof typeof RECOVERY] === 'roll-back'
            ? await rollBackAfter(ctx, failureOf(err), isoNow())
            : await failUntouched(ctx, failureOf(err), isoNow());
      }
      this.finish(ctx, result);
      return result;
    })();
    this.track(row, done);
    return done;
  }

  /** Marks the command as this process's running one until `done` settles (busy(), duplicates, idle()). */
  private track(row: CommandRow, done: Promise<Result>): void {
    this.running = { id: row.id, kind: row.kind, step: null, done };
    void done
      .finally(() => {
        if (this.running?.id === row.id) this.running = null;
      })
      .catch(() => undefined);
  }

  private finish(ctx: StepContext, result: Result): void {
    this.journal.setContext(ctx.command.id, { checks: ctx.checks.slice(-64) });
    this.journal.finish(ctx.command.id, result);
    this.log.info({ commandId: result.commandId, outcome: result.outcome, code: result.code }, `command ${result.outcome}`);
    for (const l of this.listeners) l.result?.(result);
  }

  /**
   * After a crash: the command whose owner process died holding the lock is
   * ended per RECOVERY in state.ts (fail-untouched, roll-back, record-success).
   * Returns its result, or null when there was nothing to recover (no lock, a
   * live owner, or an operator operation that is not a command).
   */
  async recover(): Promise<Result | null> {
    const holder = this.journal.lockHolder();
    if (!holder || holder.alive) return null;
    this.journal.takeOverStaleLock(holder.commandId);
    const row = this.journal.get(holder.commandId);
    if (!row) {
      // An operator backup create/restore died holding the lock; it journals no command, so nothing is left to end.
      this.journal.release(holder.commandId);
      return null;
    }
    this.log.warn({ commandId: row.id, state: row.state }, 'recovering an interrupted command');
    const ctx = this.context(row);
    const done = this.endInterrupted(ctx, row);
    if (!isTerminal(row.state)) this.track(row, done);
    return done;
  }

  /** Ends an interrupted command per RECOVERY and records its result. */
  private async endInterrupted(ctx: StepContext, row: CommandRow): Promise<Result> {
    const startedAt = row.createdAt;
    const state = row.state as State;
    let result: Result;
    if (isTerminal(state)) {
      // The crash came between the last transition and storing the result.
      result =
        row.result ??
        (await buildResult(
          ctx,
          {
            outcome: state as 'succeeded' | 'rolled_back' | 'failed',
            ...(state === 'succeeded' ? {} : { code: 'E_INTERRUPTED' as const, message: 'the agent was interrupted after finishing' }),
          },
          startedAt,
        ));
    } else {
      const recovery = RECOVERY[state as keyof typeof RECOVERY];
      try {
        if (recovery === 'fail-untouched') {
          // The staging dir is made by fetch; a command interrupted in preflight never had one.
          if (ctx.data.artifactFile === undefined && fs.existsSync(this.config.stagingDir)) {
            const partial = fs.readdirSync(this.config.stagingDir, { withFileTypes: true }).filter((e) => e.name.endsWith('.partial'));
            for (const p of partial) fs.rmSync(`${this.config.stagingDir}/${p.name}`, { force: true });
          }
          result = await failUntouched(
            ctx,
            { code: 'E_INTERRUPTED', message: `the agent was interrupted in state ${state}; nothing was changed on the node` },
            startedAt,
          );
        } else if (recovery === 'record-success') {
          if (ctx.data.bg) await finalizeBlueGreen(ctx);
          this.journal.transition(row.id, 'succeeded', 'recovered');
          result = await buildResult(ctx, { outcome: 'succeeded' }, startedAt);
        } else if (row.kind === 'rollback') {
          result = await runRollbackCommand(ctx);
        } else {
          result = await rollBackAfter(
            ctx,
            { code: 'E_INTERRUPTED', message: `the agent was interrupted in state ${state}; rolled back on restart` },
            startedAt,
          );
        }
      } catch (err) {
        ctx.log.error({ err: (err as Error).stack }, 'recovery failed');
        result = await buildResult(
          ctx,
          { outcome: 'failed', code: 'E_ROLLBACK_FAILED', message: `recovery from ${state} failed: ${(err as Error).message}` },
          startedAt,
        );
        try {
          this.journal.transition(row.id, 'failed', 'recovery failed');
        } catch {
          /* already terminal */
        }
      }
    }
    this.finish(ctx, result);
    return result;
  }

  /** Waits for the command this process runs, if any. */
  async idle(): Promise<void> {
    while (this.running) await this.running.done.catch(() => undefined);
  }
}

export function newCommandId(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

export { CodedError };
