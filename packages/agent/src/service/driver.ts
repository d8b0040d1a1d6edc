/**
 * How the agent stops and starts guts-node. Production uses systemd; the demo
 * and tests use the process driver. Both drive real processes.
 */
import type { AgentConfig } from '../config.js';
import { ProcessDriver } from './process.js';
import { SystemdDriver } from './systemd.js';

export interface ServiceDriver {
  readonly kind: 'systemd' | 'process';
  /** Whether the unit/binary the driver controls exists. */
  exists(): Promise<{ ok: boolean; detail: string }>;
  isActive(): Promise<boolean>;
  start(): Promise<void>;
  /** Stops and waits until the process is gone; throws E_STOP on timeout. */
  stop(): Promise<void>;
  /** Last log lines of the node, for evidence on failure. */
  logTail(lines: number): Promise<string[]>;
  /** The user the service runs the node as ('root' when none is set), or null when the driver cannot tell. */
  runsAs(): Promise<string | null>;
}

export function createDriver(config: AgentConfig): ServiceDriver {
  return config.service.driver === 'systemd' ? new SystemdDriver(config) : new ProcessDriver(config);
}
