/**
 * `backup restore`: binary, node config and data dir from a backup, as one
 * change. The backup is checked before the node is touched, so a refusal
 * (E_RESTORE, E_RESTORE_UNSAFE) changes nothing. After that, a restore that
 * fails at any point puts back what it replaced and starts the node again if
 * it was running: an operator reaching for a restore must never be left with
 * a stopped node and a half-restored host.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CodedError, errorCodeOf } from '@guts-upgrade/protocol';
import type { BackupStore, DataSwap } from './backup-store.js';
import type { AgentConfig } from './config.js';
import type { NodeClient } from './node-client.js';
import type { ServiceDriver } from './service/driver.js';
import { copyFileAtomic, sleep } from './util.js';

export interface RestoreDeps {
  config: AgentConfig;
  driver: ServiceDriver;
  node: NodeClient;
  backups: BackupStore;
  /** One line of progress for the operator. */
  say(line: string): void;
}

/** Copies of the binary and the node config as they were before the restore. */
interface Kept {
  dir: string;
  putBack(): void;
  discard(): void;
}

function keepCurrent(config: AgentConfig, id: string): Kept {
  const dir = fs.mkdtempSync(path.join(config.stateDir, `restore-${id}-`));
  let files: { target: string; copy: string; mode: number | null }[];
  try {
    files = [config.node.binary, config.node.config].map((target, i) => {
      const copy = path.join(dir, String(i));
      if (!fs.existsSync(target)) return { target, copy, mode: null };
      fs.copyFileSync(target, copy);
      return { target, copy, mode: fs.statSync(target).mode & 0o7777 };
    });
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw new CodedError(
      'E_RESTORE',
      `cannot keep a copy of the binary and config in ${dir} before the restore: ${(err as Error).message}; nothing was changed`,
    );
  }
  return {
    dir,
    putBack() {
      for (const f of files) {
        if (f.mode === null) fs.rmSync(f.target, { force: true });
        else copyFileAtomic(f.copy, f.target, f.mode);
      }
    },
    discard() {
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Starts the node and waits for /health/ready; a node that exits fails at once (E_START), a slow one at readyTimeoutMs. */
async function startReady({ config, driver, node }: RestoreDeps): Promise<void> {
  await driver.start();
  const deadline = Date.now() + config.checks.readyTimeoutMs;
  let inactive = 0;
  for (;;) {
    if (await node.ready()) return;
    if (!(await driver.isActive())) {
      // Two readings in a row: a systemd unit can be briefly 'activating'.
      if (++inactive >= 2) throw new CodedError('E_START', `guts-node exited: ${(await driver.logTail(5)).join(' | ').slice(0, 1000)}`);
    } else inactive = 0;
    if (Date.now() > deadline) throw new CodedError('E_HEALTH_TIMEOUT', `guts-node was not ready within ${config.checks.readyTimeoutMs} ms`);
    await sleep(200);
  }
}

/**
 * Undoes a failed restore: stops what it started, puts the replaced data dir,
 * binary and config back, and starts the node if it ran before. Returns what
 * could not be put back (empty: all of it was).
 */
async function putBack(deps: RestoreDeps, kept: Kept, swap: DataSwap | null, wasRunning: boolean): Promise<string[]> {
  try {
    await deps.driver.stop();
  } catch (err) {
    // Files are not swapped under a node that still runs.
    return [`stopping the restored node: ${(err as Error).message}`];
  }
  const problems: string[] = [];
  try {
    swap?.undo();
  } catch (err) {
    problems.push(`the data dir (the replaced one is at ${swap?.previous}): ${(err as Error).message}`);
  }
  try {
    kept.putBack();
  } catch (err) {
    problems.push(`the binary and config (copies in ${kept.dir}): ${(err as Error).message}`);
  }
  if (wasRunning && problems.length === 0) {
    try {
      await startReady(deps);
    } catch (err) {
      problems.push(`restarting the node: ${(err as Error).message}`);
    }
  }
  return problems;
}

/** Restores backup `id`; resolves with the version the node runs after it (null when it does not answer). */
export async function restoreBackup(deps: RestoreDeps, id: string): Promise<string | null> {
  const { backups, config, driver, say } = deps;
  await backups.verify(id);
  const wasRunning = await driver.isActive();
  const kept = keepCurrent(config, id);
  let swap: DataSwap | null = null;
  let stage = 'stopping the node';
  try {
    say(`stopping ${config.service.name}`);
    await driver.stop();
    stage = 'restoring the files';
    say(`restoring binary, config and data from ${id}`);
    await backups.restoreBinary(id);
    await backups.restoreConfig(id);
    swap = await backups.swapInData(id);
    stage = 'starting the restored node';
    say('starting the node');
    await startReady(deps);
  } catch (err) {
    const failure = `${(err as Error).message}`;
    say(`restore failed while ${stage}: ${failure}; putting back what was there`);
    const problems = await putBack(deps, kept, swap, wasRunning);
    const code = errorCodeOf(err) === 'E_RESTORE_UNSAFE' ? 'E_RESTORE_UNSAFE' : 'E_RESTORE';
    if (problems.length > 0) {
      throw new CodedError(
        code,
        `restore of ${id} failed while ${stage} (${failure}), and putting back what was there failed too: ${problems.join('; ')}. The node needs a person: run \`guts-upgrade-agent doctor\``,
        { cause: errorCodeOf(err) },
      );
    }
    kept.discard();
    throw new CodedError(
      code,
      `restore of ${id} failed while ${stage} (${failure}); the previous binary, config and data dir were put back${wasRunning ? ' and the node started again' : '; the node was not running before and stays stopped'}`,
      { cause: errorCodeOf(err) },
    );
  }
  swap.commit();
  kept.discard();
  return deps.node.runningVersion();
}
