/**
 * Kills what a demo or test started when the process that started it dies,
 * however it dies. The simulator nodes must run detached (the agent adopts
 * them by pid file), so they outlive a test process that tap's timeout kills
 * and would keep finalizing blocks, and loading the machine, for good.
 *
 * A small watcher process holds the read end of a pipe from its parent; the
 * kernel closes the write end when the parent exits, even on SIGKILL, and the
 * watcher then kills every process on its list whose start time still matches
 * (a recycled pid is left alone). Pid files are read at that moment, so
 * nodes an agent restarted after an upgrade are found too.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { processStartTime } from '@guts-upgrade/agent/process-identity';

export interface Reaper {
  /** A process to kill when the owner dies (start time read now). */
  track(pid: number): void;
  /** A "pid starttime" file, read when the owner dies. */
  trackPidFile(path: string): void;
  /** Kills what is tracked now, then stops watching. */
  release(): void;
}

export function startReaper(listFile: string): Reaper {
  writeFileSync(listFile, '');
  const env = { ...process.env };
  delete env.NODE_OPTIONS; // a test runner's loader hooks have no business in the watcher
  const child: ChildProcess = spawn(process.execPath, [fileURLToPath(import.meta.url), listFile], {
    detached: true, // its own process group: a signal to the owner's group must not take it along
    stdio: ['pipe', 'ignore', 'ignore'],
    env,
  });
  child.unref();
  (child.stdin as unknown as { unref(): void }).unref();
  child.stdin!.on('error', () => undefined);
  return {
    track(pid) {
      appendFileSync(listFile, `pid ${pid} ${processStartTime(pid)}\n`);
    },
    trackPidFile(path) {
      appendFileSync(listFile, `pidfile ${path}\n`);
    },
    release() {
      child.stdin!.end();
    },
  };
}

function readOrEmpty(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

function reap(listFile: string): void {
  for (const line of readOrEmpty(listFile).split('\n')) {
    const [kind, ...rest] = line.split(' ');
    const [pidText, start] = kind === 'pidfile' ? readOrEmpty(rest.join(' ')).trim().split(/\s+/) : rest;
    const pid = Number(pidText);
    if (!pid || !start || processStartTime(pid) !== start) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const listFile = process.argv[2]!;
  const done = () => {
    reap(listFile);
    process.exit(0);
  };
  process.stdin.on('data', () => undefined);
  process.stdin.once('end', done);
  process.stdin.once('error', done);
}
