/**
 * The HTTP API: one fastify route plugin per resource (health, nodes,
 * rollouts, fleet, audit), each declaring its TypeBox schemas beside its
 * routes; the TypeBox type provider types every handler's body, params and
 * query from them. Schemas say additionalProperties false and ajv is set not
 * to coerce or strip, so a malformed body is refused (400 E_BAD_MESSAGE naming
 * the field) instead of half-applied. Routes reach the coordinator only
 * through its services (node registry, rollout service, fleet watch, audit
 * log, operator tokens).
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Limits } from '../config.js';
import type { Coordinator } from '../engine/coordinator.js';
import type { Metrics } from '../metrics.js';
import { auditRoutes } from './audit.js';
import { operatorAuth } from './auth.js';
import { fleetRoutes } from './fleet.js';
import { healthRoutes } from './health.js';
import { BODY_LIMIT_BYTES, jsonBodies } from './json-body.js';
import { nodeRoutes } from './nodes.js';
import { pageRoutes } from './page.js';
import { apiRateLimit } from './rate-limit.js';
import { errorHandler, sendError } from './replies.js';
import { rolloutRoutes } from './rollouts.js';
import { operatorRoute } from './schemas.js';

export type { Principal } from '../engine/operators.js';

/** What the API may use of the coordinator. */
export type ApiServices = Pick<Coordinator, 'nodes' | 'rollouts' | 'audit' | 'operators' | 'fleetWatch' | 'reportedSets' | 'confirmSet'>;

export async function buildApi(opts: {
  services: ApiServices;
  metrics: Metrics;
  log: Logger;
  serverFactory?: (handler: (req: IncomingMessage, res: ServerResponse) => void) => Server;
  ready: () => boolean;
  limit: Limits['api'];
}): Promise<FastifyInstance> {
  const { services, metrics } = opts;
  const app: FastifyInstance = Fastify({
    loggerInstance: opts.log.child({ component: 'api' }, { level: opts.log.levelVal >= 40 ? opts.log.level : 'warn' }) as unknown as FastifyBaseLogger,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false } },
    ...(opts.serverFactory ? { serverFactory: opts.serverFactory as never } : {}),
    // Larger bodies are refused (413 E_BODY_TOO_LARGE) before they are read: no request needs more.
    bodyLimit: BODY_LIMIT_BYTES,
  });
  await apiRateLimit(app, { limit: opts.limit, operators: services.operators, limited: (client) => metrics.apiRateLimited(client) });

  await app.register(swagger, {
    openapi: {
      info: { title: 'guts-upgrade coordinator', version: '0.1.0', description: 'Sequenced, BFT-safe upgrades of guts-node validators.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  app.setErrorHandler(errorHandler(opts.log));
  app.setNotFoundHandler((req, reply) => sendError(reply, 'E_NOT_FOUND', `no route ${req.method} ${req.url}`));
  jsonBodies(app);

  await app.register(healthRoutes, { metrics, ready: opts.ready });
  await app.register(pageRoutes);
  // Everything under /api/v1 needs an operator token (a viewer's only reads).
  await app.register(async (operatorApi) => {
    operatorApi.addHook('onRequest', operatorAuth(services.operators));
    // Who the token belongs to: the page asks, to offer the buttons only to an operator.
    operatorApi.get('/api/v1/whoami', { schema: operatorRoute({ tags: ['auth'] }) }, async (req) => ({ name: req.principal!.name, role: req.principal!.role }));
    await operatorApi.register(nodeRoutes, { nodes: services.nodes });
    await operatorApi.register(rolloutRoutes, { rollouts: services.rollouts });
    await operatorApi.register(fleetRoutes, {
      fleet: { watch: () => services.fleetWatch(), reportedSets: () => services.reportedSets(), confirmSet: (d, a) => services.confirmSet(d, a) },
    });
    await operatorApi.register(auditRoutes, { audit: services.audit });
  });
  return app;
}
