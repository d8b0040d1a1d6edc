/** Health state and the response shapes of crates/guts-node/src/health/mod.rs. */

export type HealthStatus = 'up' | 'down' | 'unknown';
export interface ComponentHealth {
  status: HealthStatus;
  latency_ms?: number;
  details?: Record<string, unknown>;
}
export interface ReadinessChecks {
  storage: ComponentHealth;
  p2p: ComponentHealth;
  realtime: ComponentHealth;
}
/** The body of GET /health. */
export interface HealthBody {
  status: 'up' | 'down';
  version: string;
  uptime_seconds: number;
  checks: ReadinessChecks;
}

export class HealthState {
  readonly startTime = Date.now();
  startupComplete = false;
  startupDurationMs: number | null = null;
  ready = false;
  storageHealthy = false;
  storageReason: string | null = null;
  realtimeHealthy = false;

  constructor(private readonly peers: () => { connected: boolean; count: number }) {}

  uptime(): number {
    return Math.floor((Date.now() - this.startTime) / 1000);
  }

  checks(): ReadinessChecks {
    const p = this.peers();
    return {
      storage: this.storageHealthy ? { status: 'up' } : { status: 'down', ...(this.storageReason ? { details: { reason: this.storageReason } } : {}) },
      p2p: p.connected ? { status: 'up', details: { peer_count: p.count } } : { status: 'unknown', details: { reason: 'P2P not connected or not enabled' } },
      realtime: { status: this.realtimeHealthy ? 'up' : 'down', details: { connections: 0 } },
    };
  }

  health(version: string): { code: number; body: HealthBody } {
    const checks = this.checks();
    const up = this.ready && checks.storage.status === 'up' && checks.realtime.status === 'up';
    return { code: up ? 200 : 503, body: { status: up ? 'up' : 'down', version, uptime_seconds: this.uptime(), checks } };
  }

  live(): { code: number; body: unknown } {
    return { code: 200, body: { status: 'up', uptime_seconds: this.uptime() } };
  }

  readiness(): { code: number; body: unknown } {
    const checks = this.checks();
    const up = this.ready && checks.storage.status === 'up';
    return { code: up ? 200 : 503, body: { status: up ? 'up' : 'down', checks } };
  }

  startup(): { code: number; body: unknown } {
    return this.startupComplete
      ? { code: 200, body: { status: 'up', ...(this.startupDurationMs !== null ? { startup_duration_ms: this.startupDurationMs } : {}) } }
      : { code: 503, body: { status: 'down' } };
  }
}
