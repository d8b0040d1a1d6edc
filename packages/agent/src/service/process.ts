/**
 * Runs guts-node as a detached child with a pid file and a log file, like a
 * tiny service manager: the node outlives the agent, and a restarted agent
 * re-attaches through the pid file (pid + process start time, so a reused pid
 * is never mistaken for the node).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CodedError } from '@guts-upgrade/protocol';
import { fillArgv, type AgentConfig } from '../config.js';
import { processAlive, processStartTime } from '../process-identity.js';
import { sleep, tailFile, writeFileAtomic } from '../util.js';
import type { ServiceDriver } from './driver.js';

export class ProcessDriver implements ServiceDriver {
  readonly kind = 'process' as const;

  constructor(private readonly config: AgentConfig) {}

  /** The live pid from the pid file, or null. */
  pid(): number | null {
    let text: string;
    try {
      text = fs.readFileSync(this.config.service.pidFile, 'utf8');
    } catch {
      return null;
    }
    const [pidStr, start] = text.trim().split(/\s+/);
    const pid = Number(pidStr);
    if (!Number.isInteger(pid) || pid <= 0) return null;
    return processAlive(pid, start ?? null) ? pid : null;
  }

  async exists() {
    const ok = fs.existsSync(this.config.node.binary);
    return { ok, detail: `binary ${this.config.node.binary} ${ok ? 'present' : 'missing'}` };
  }

  async isActive() {
    return this.pid() !== null;
  }

  async start() {
    if (this.pid() !== null) return;
    const c = this.config;
    const args = fillArgv(c.service.args, { binary: c.node.binary, config: c.node.config, dataDir: c.node.dataDir });
    fs.mkdirSync(path.dirname(c.service.logFile), { recursive: true });
    const log = fs.openSync(c.service.logFile, 'a');
    try {
      const child = spawn(c.node.binary, args, {
        detached: true,
        stdio: ['ignore', log, log],
        env: { ...process.env, ...c.service.env },
        cwd: path.dirname(c.node.config),
      });
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', () => resolve());
        child.once('error', (err) => reject(new CodedError('E_START', `cannot spawn ${c.node.binary}: ${err.message}`)));
      });
      const pid = child.pid!;
      writeFileAtomic(c.service.pidFile, `${pid} ${processStartTime(pid)}\n`);
      // Reap the child if it dies while we live, so it is not left a zombie that looks alive.
      child.on('exit', () => {});
      child.unref();
    } finally {
      fs.closeSync(log);
    }
  }

  async stop() {
    const pid = this.pid();
    if (pid === null) return;
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      /* already gone */
    }
    const deadline = Date.now() + this.config.service.stopTimeoutMs;
    while (this.pid() !== null) {
      if (Date.now() > deadline) {
        // systemd's behaviour after TimeoutStopSec: SIGKILL.
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
        await sleep(200);
        if (this.pid() !== null) throw new CodedError('E_STOP', `guts-node pid ${pid} did not stop`);
        break;
      }
      await sleep(50);
    }
    try {
      fs.unlinkSync(this.config.service.pidFile);
    } catch {
      /* fine */
    }
  }

  /** The process driver starts the node as the agent itself: it cannot name another user. */
  async runsAs() {
    return null;
  }

  async logTail(lines: number) {
    return tailFile(this.config.service.logFile, lines);
  }
}
