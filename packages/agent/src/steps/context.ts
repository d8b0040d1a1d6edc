import type { Logger } from 'pino';
import type { CheckResult, Command, StepName, UpgradePath } from '@guts-upgrade/protocol';
import type { BackupStore } from '../backup-store.js';
import type { BlueGreenData } from '../blue-green/run.js';
import type { AgentConfig } from '../config.js';
import type { Journal } from '../journal.js';
import type { AfterJournal } from '../pause-hook.js';
import type { MetricsSample, NodeClient } from '../node-client.js';
import type { ServiceDriver } from '../service/driver.js';
import type { Identities } from '../run-as.js';

export type ProgressState = 'started' | 'running' | 'done' | 'failed' | 'skipped';
export interface ProgressEvent {
  commandId: string;
  step: StepName;
  state: ProgressState;
  message?: string;
  percent?: number;
  at: string;
}

/** What the pipeline persists in the journal's context column (survives a crash). */
export interface UpgradeData {
  fromVersion?: string;
  toVersion?: string;
  path?: UpgradePath;
  oldBinarySha?: string;
  artifactFile?: string;
  /** The staged artifact's sha256: the command's, or the signed release's when the agent resolves releases. */
  artifactSha256?: string;
  backupId?: string;
  /** Set before anything may change the data dir (manual migrate, or first start of a migrating build). */
  migrationRan?: boolean;
  stoppedAt?: number;
  /** The node's consensus view at its last stop: only a block in a later view proves it back. */
  stoppedAtView?: number;
  readyAt?: number;
  baseline?: MetricsSample | null;
  failure?: { code: string; message: string; step: string };
  checks?: CheckResult[];
  /** Container drivers: the image the node ran before, and the release image (ids). */
  oldImage?: string;
  newImage?: string;
  /** docker driver: the container's create configuration, journaled before the container is removed. */
  containerSpec?: Record<string, unknown>;
  /** compose driver: the agent's override file before this upgrade (null: there was none). */
  prevOverride?: string | null;
  /** Blue-green upgrades: the phase and the two containers (blue-green/run.ts). */
  bg?: BlueGreenData;
  /** rollback command: the upgrade it undoes. */
  upgradeId?: string;
}

export interface StepContext {
  config: AgentConfig;
  journal: Journal;
  driver: ServiceDriver;
  node: NodeClient;
  backups: BackupStore;
  log: Logger;
  command: Command;
  data: UpgradeData;
  checks: CheckResult[];
  save(patch: Partial<UpgradeData>): void;
  progress(step: StepName, state: ProgressState, message?: string, percent?: number): void;
  /** Called after each step is journaled, before its side effects (the crash tests pause there). */
  afterJournal: AfterJournal;
  /** Who runs the candidate and the node's commands (run-as.ts), resolved once per command. */
  identities(): Promise<Identities>;
}

export interface CheckExtra {
  waitedMs?: number;
  last?: string;
  measured?: boolean;
}

export function addCheck(ctx: StepContext, name: string, ok: boolean, detail?: string, extra: CheckExtra = {}): void {
  ctx.checks.push({
    name,
    ok,
    ...(detail ? { detail: detail.slice(0, 4000) } : {}),
    ...(extra.waitedMs !== undefined ? { waitedMs: Math.max(0, Math.round(extra.waitedMs)) } : {}),
    ...(extra.last !== undefined ? { last: extra.last.slice(0, 256) } : {}),
    ...(extra.measured === false ? { measured: false } : {}),
  });
}
