/** A small HTTP client for the API over TCP or a unix socket (used by the CLI, the demo and tests). */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { rootCertificates } from 'node:tls';
import type { EventRow } from './db.js';
import type { FleetWatch } from './engine/fleet-view.js';
import type { NodeListing } from './engine/node-registry.js';
import type { NodeView, Rollout, Step } from './model.js';
import type { Plan } from './planner.js';

/** The JSON bodies of the API's reads, for typed calls such as `api<RolloutDetailBody>(t, 'GET', ...)`. */
export interface RolloutDetailBody {
  rollout: Rollout;
  /** In-flight steps carry the agent link. */
  steps: (Step & { agent?: NodeView['agent'] })[];
}
/** GET /api/v1/fleet: the fleet watch and the validator sets the agents report (for `chain confirm`). */
export type FleetBody = FleetWatch & { reportedSets: { digest: string; epoch: number; nodes: string[] }[] };
export interface PlanBody {
  plan: Plan;
}
/** POST /api/v1/nodes: the agent token, shown once. */
export interface NodeRegisteredBody {
  id: string;
  token: string;
  note: string;
}
export interface NodeListBody {
  nodes: NodeListing[];
}
export interface RolloutListBody {
  rollouts: Rollout[];
}
export interface EventsBody {
  events: EventRow[];
}

export interface ApiTarget {
  url?: string;
  socket?: string;
  token?: string;
  /** PEM of a private CA trusted besides the system's (https only). */
  ca?: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly body: unknown,
  ) {
    super(`${code}: ${message}`);
  }
}

export async function api<T = unknown>(target: ApiTarget, method: string, path: string, body?: unknown): Promise<T> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const base = target.url ? new URL(target.url) : null;
  const req = (base?.protocol === 'https:' ? httpsRequest : httpRequest)({
    method,
    ...(target.socket ? { socketPath: target.socket } : { host: base?.hostname ?? '127.0.0.1', port: base?.port || (base?.protocol === 'https:' ? 443 : 80) }),
    path,
    // `ca` replaces Node's trust store, so the system's roots go along with the private CA.
    ...(target.ca ? { ca: [...rootCertificates, target.ca] } : {}),
    headers: {
      ...(target.token ? { authorization: `Bearer ${target.token}` } : {}),
      ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
    },
  });
  return new Promise<T>((resolve, reject) => {
    req.on('error', reject);
    req.setTimeout(30_000, () => req.destroy(new Error('request timed out')));
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = text;
        try {
          parsed = text ? JSON.parse(text) : null;
        } catch {
          /* not JSON (metrics) */
        }
        if ((res.statusCode ?? 500) >= 400) {
          const error = (parsed as { error?: { code?: string; message?: string } } | null)?.error;
          reject(new ApiError(res.statusCode ?? 500, error?.code ?? 'E_INTERNAL', error?.message ?? text, parsed));
        } else resolve(parsed as T);
      });
    });
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}
