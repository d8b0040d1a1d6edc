/**
 * Per-client API rate limits (@fastify/rate-limit, in memory): requests are
 * counted against the operator whose token they carry, so one runaway script
 * slows only itself; a request without a known token is counted against its
 * client address, so guessing tokens or hammering open routes costs a stranger
 * their own budget. A client past its limit gets 429 E_RATE_LIMITED with a
 * Retry-After header. The hook runs first on every route (and on unknown
 * paths), before authentication, except the health probes: a probe refused
 * would restart a coordinator that is fine.
 */
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { CodedError } from '@guts-upgrade/protocol';
import type { Limits } from '../config.js';
import type { Operators } from '../engine/operators.js';
import type { ApiClient } from '../metrics.js';

const UNLIMITED = new Set(['/health/live', '/health/ready']);

export async function apiRateLimit(
  app: FastifyInstance,
  opts: { limit: Limits['api']; operators: Pick<Operators, 'authenticate'>; limited: (client: ApiClient) => void },
): Promise<void> {
  const { limit, operators } = opts;
  const clientOf = (req: FastifyRequest): { key: string; client: ApiClient } => {
    const op = operators.authenticate(req.headers.authorization);
    return op ? { key: `operator:${op.name}`, client: 'operator' } : { key: `address:${req.ip}`, client: 'address' };
  };
  await app.register(rateLimit, {
    global: false,
    max: limit.max,
    timeWindow: limit.windowMs,
    keyGenerator: (req) => clientOf(req).key,
    allowList: (req) => UNLIMITED.has(req.url.split('?')[0] ?? ''),
    onExceeded: (req) => opts.limited(clientOf(req).client),
    errorResponseBuilder: (_req, ctx) =>
      new CodedError(
        'E_RATE_LIMITED',
        `more than ${ctx.max} requests in ${Math.round(limit.windowMs / 1000)} s for this token or address; retry in ${ctx.after}`,
        {
          reason: 'rate limit',
        },
      ),
  });
  // A root hook rather than the plugin's per-route one: it runs before the operator API's
  // authentication and also covers the not-found handler.
  app.addHook('onRequest', app.rateLimit());
}
