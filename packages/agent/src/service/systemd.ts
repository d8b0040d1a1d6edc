import fs from 'node:fs';
import { CodedError } from '@guts-upgrade/protocol';
import type { AgentConfig } from '../config.js';
import { runArgv, sleep, tailLines } from '../util.js';
import type { ServiceDriver } from './driver.js';

/** systemctl / journalctl, by argv (never a shell). */
export class SystemdDriver implements ServiceDriver {
  readonly kind = 'systemd' as const;
  private readonly unit: string;

  constructor(private readonly config: AgentConfig) {
    this.unit = config.service.name.endsWith('.service') ? config.service.name : `${config.service.name}.service`;
  }

  private systemctl(args: string[], timeoutMs = 15_000) {
    return runArgv(['systemctl', ...args], { timeoutMs });
  }

  async exists() {
    const r = await this.systemctl(['show', '--property=LoadState', '--value', this.unit]);
    const loaded = r.code === 0 && r.stdout.trim() === 'loaded';
    const bin = fs.existsSync(this.config.node.binary);
    return {
      ok: loaded && bin,
      detail: `unit ${this.unit} ${loaded ? 'loaded' : `not loaded (${r.stdout.trim() || r.stderr.trim()})`}; binary ${this.config.node.binary} ${bin ? 'present' : 'missing'}`,
    };
  }

  async isActive() {
    const r = await this.systemctl(['is-active', '--quiet', this.unit]);
    return r.code === 0;
  }

  async start() {
    // reset-failed: a unit that hit its start limit would otherwise refuse to start again.
    await this.systemctl(['reset-failed', this.unit]);
    const r = await this.systemctl(['start', this.unit], this.config.checks.readyTimeoutMs);
    if (r.code !== 0) throw new CodedError('E_START', `systemctl start ${this.unit} failed: ${r.stderr.trim()}`);
  }

  async stop() {
    const r = await this.systemctl(['stop', this.unit], this.config.service.stopTimeoutMs + 5_000);
    if (r.code !== 0) throw new CodedError('E_STOP', `systemctl stop ${this.unit} failed: ${r.stderr.trim()}`);
    const deadline = Date.now() + this.config.service.stopTimeoutMs;
    while (await this.isActive()) {
      if (Date.now() > deadline) throw new CodedError('E_STOP', `${this.unit} still active after stop`);
      await sleep(200);
    }
  }

  async runsAs() {
    const r = await this.systemctl(['show', '--property=User', '--value', this.unit]);
    if (r.code !== 0) return null;
    return r.stdout.trim() || 'root';
  }

  async logTail(lines: number) {
    const r = await runArgv(['journalctl', '-u', this.unit, '-n', String(lines), '--no-pager', '-o', 'cat'], { timeoutMs: 10_000 });
    return tailLines(r.stdout, lines);
  }
}
