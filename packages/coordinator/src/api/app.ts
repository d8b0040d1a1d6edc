/**
 * The HTTP API. Every route declares JSON schemas with additionalProperties
 * false and ajv is set not to coerce or strip, so a malformed body is refused
 * (400 E_BAD_MESSAGE naming the field) instead of half-applied.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { timingSafeEqual } from 'node:crypto';
import type { Server } from 'node:http';
import type { Logger } from 'pino';
import { ArtifactSchema, CodedError, errorCodeOf, type ErrorCode } from '@guts-upgrade/protocol';
import { hashToken } from '../db.js';
import type { Coordinator, RolloutInput } from '../engine/coordinator.js';
import type { Metrics } from '../metrics.js';
import type { Role } from '../config.js';
import type { OperatorAction } from '../states.js';

const STATUS: Partial<Record<ErrorCode, number>> = {
  E_BAD_MESSAGE: 400,
  E_BAD_VERSION: 400,
  E_SAME_VERSION: 400,
  E_DOWNGRADE: 400,
  E_UNSUPPORTED_PATH: 400,
  E_MAJOR_NOT_APPROVED: 400,
  E_DISRUPTION_BUDGET: 400,
  E_AUTH: 401,
  E_FORBIDDEN: 403,
  E_NOT_FOUND: 404,
  E_CONFLICT: 409,
  E_INVALID_STATE: 409,
};

const S = {
  str: (extra: Record<string, unknown> = {}) => ({ type: 'string', ...extra }),
  nodeId: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' },
  rolloutId: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$' },
};

const errorSchema = {
  type: 'object',
  properties: {
    error: {
      type: 'object',
      properties: { code: { type: 'string' }, message: { type: 'string' }, field: { type: 'string' }, reason: { type: 'string' } },
    },
  },
};

// The artifact fields as the protocol defines them (what the agent will be sent), but
// strict: an operator's request with an unknown field is a mistake, not a newer peer.
const targetSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['version', 'url', 'sha256'],
  properties: ArtifactSchema.properties,
};

const rolloutBody = {
  type: 'object',
  additionalProperties: false,
  required: ['target'],
  properties: {
    target: targetSchema,
    strategy: { type: 'string', enum: ['rolling', 'canary', 'halt'] },
    nodes: { type: 'array', items: S.nodeId, minItems: 1, maxItems: 1000, uniqueItems: true },
    options: {
      type: 'object',
      additionalProperties: false,
      properties: {
        maxUnavailable: { type: 'integer', minimum: 1, maximum: 1000 },
        stabilizationMs: { type: 'integer', minimum: 0, maximum: 86_400_000 },
        soakMs: { type: 'integer', minimum: 0, maximum: 604_800_000 },
        syncDistance: { type: 'integer', minimum: 0, maximum: 1_000_000 },
        syncTimeoutMs: { type: 'integer', minimum: 1000, maximum: 86_400_000 },
        haltTimeoutMs: { type: 'integer', minimum: 1000, maximum: 86_400_000 },
        autoRollback: { type: 'boolean' },
        allowDowngrade: { type: 'boolean' },
        canary: S.nodeId,
        window: { type: 'string', minLength: 1, maxLength: 128 },
        requireApproval: { type: 'boolean' },
        canaryLimits: {
          type: 'object',
          additionalProperties: false,
          properties: {
            maxErrorRateIncrease: { type: 'number', minimum: 0, maximum: 1 },
            maxLatencyFactor: { type: 'number', minimum: 1, maximum: 1000 },
            minLatencyMs: { type: 'number', minimum: 0, maximum: 3_600_000 },
            minRequests: { type: 'integer', minimum: 1, maximum: 1_000_000_000 },
          },
        },
      },
    },
  },
};

const actionBody = {
  type: 'object',
  additionalProperties: false,
  properties: { reason: { type: 'string', maxLength: 1024 } },
};

export interface Principal {
  name: string;
  role: Role;
}

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
  }
}

function sendError(reply: FastifyReply, code: ErrorCode, message: string, extra: { field?: string; reason?: string; [k: string]: unknown } = {}) {
  return reply.status(STATUS[code] ?? 500).send({ error: { code, message, ...extra } });
}

export async function buildApi(opts: {
  coordinator: Coordinator;
  metrics: Metrics;
  log: Logger;
  serverFactory?: (handler: (req: any, res: any) => void) => Server;
  ready: () => boolean;
}): Promise<FastifyInstance> {
  const { coordinator, metrics } = opts;
  const app: FastifyInstance = Fastify({
    loggerInstance: opts.log.child({ component: "api" }, { level: opts.log.levelVal >= 40 ? opts.log.level : "warn" }) as unknown as FastifyBaseLogger,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false } },
    ...(opts.serverFactory ? { serverFactory: opts.serverFactory as never } : {}),
    bodyLimit: 256 * 1024,
  });

  await app.register(swagger, {
    openapi: {
      info: { title: 'guts-upgrade coordinator', version: '0.1.0', description: 'Sequenced, BFT-safe upgrades of guts-node validators.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  app.setErrorHandler((err: any, _req, reply) => {
    if (err.validation) {
      const v = err.validation[0] ?? {};
      const missing = v.params?.missingProperty;
      const extra = v.params?.additionalProperty;
      const path = String(v.instancePath ?? '').replace(/^\//, '').replace(/\//g, '.');
      const field = [err.validationContext ?? 'body', path, missing ?? extra].filter(Boolean).join('.');
      const reason = extra ? 'unknown property' : missing ? 'is required' : String(v.message ?? 'invalid');
      return sendError(reply, 'E_BAD_MESSAGE', `${field}: ${reason}`, { field, reason });
    }
    if (err instanceof CodedError) {
      return sendError(reply, err.code, err.message, { ...(err.details ?? {}) });
    }
    if (typeof err.code === 'string' && err.code.startsWith('FST_') && (err.statusCode ?? 500) < 500) {
      return sendError(reply, 'E_BAD_MESSAGE', err.message, { field: 'body', reason: err.message });
    }
    const code = errorCodeOf(err);
    opts.log.error({ err }, 'request failed');
    return sendError(reply, code, err.message ?? 'internal error');
  });
  app.setNotFoundHandler((req, reply) => sendError(reply, 'E_NOT_FOUND', `no route ${req.method} ${req.url}`));

  // Operator auth: bearer token from config; viewer may only read.
  const authenticate = async (req: FastifyRequest, reply: FastifyReply) => {
    const m = /^Bearer (.+)$/.exec(String(req.headers.authorization ?? ''));
    const h = m ? Buffer.from(hashToken(m[1]!), 'hex') : null;
    const op = h ? coordinator.config.operators.find((o) => timingSafeEqual(Buffer.from(o.tokenHash, 'hex'), h)) : undefined;
    if (!op) return sendError(reply, 'E_AUTH', 'missing or unknown operator token');
    if (req.method !== 'GET' && req.method !== 'HEAD' && op.role !== 'operator') {
      return sendError(reply, 'E_FORBIDDEN', `role ${op.role} may only read`);
    }
    req.principal = { name: op.name, role: op.role };
  };
  const actor = (req: FastifyRequest) => `operator:${req.principal?.name ?? '?'}`;
  const secured = { onRequest: authenticate, schema: { security: [{ bearer: [] }] } };
  const merge = (schema: Record<string, unknown>) => ({ ...secured, schema: { ...secured.schema, ...schema, response: { '4xx': errorSchema } } });

  app.get('/health/live', { schema: { security: [], hide: false } }, async () => ({ status: 'up' }));
  app.get('/health/ready', { schema: { security: [] } }, async (_req, reply) => {
    const ok = opts.ready();
    return reply.status(ok ? 200 : 503).send({ status: ok ? 'up' : 'down' });
  });
  app.get('/metrics', { schema: { security: [] } }, async (_req, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.render();
  });

  app.get('/api/v1/nodes', merge({ tags: ['nodes'] }), async () => {
    const fleet = coordinator.fleetView();
    return {
      nodes: coordinator.store.activeNodes().map((n) => {
        const v = fleet.nodes.get(n.id)!;
        return { ...v, address: n.address, registeredAt: new Date(n.createdAt).toISOString(), lastSeenAt: v.lastSeenAt ? new Date(v.lastSeenAt).toISOString() : null };
      }),
    };
  });
  app.post(
    '/api/v1/nodes',
    merge({
      tags: ['nodes'],
      body: {
        type: 'object',
        additionalProperties: false,
        required: ['id'],
        properties: { id: S.nodeId, address: { type: 'string', maxLength: 256 } },
      },
    }),
    async (req, reply) => {
      const b = req.body as { id: string; address?: string };
      const r = coordinator.nodes.register(b.id, b.address ?? null, actor(req));
      return reply.status(201).send({ id: r.id, token: r.token, note: 'the token is shown only once; configure it in the agent' });
    },
  );
  app.delete(
    '/api/v1/nodes/:id',
    merge({ tags: ['nodes'], params: { type: 'object', additionalProperties: false, required: ['id'], properties: { id: S.nodeId } } }),
    async (req) => {
      const { id } = req.params as { id: string };
      coordinator.nodes.remove(id, actor(req));
      return { id, removed: true };
    },
  );

  app.post('/api/v1/rollouts/plan', merge({ tags: ['rollouts'], body: rolloutBody }), async (req) => ({ plan: coordinator.rollouts.plan(req.body as RolloutInput) }));
  app.post('/api/v1/rollouts', merge({ tags: ['rollouts'], body: rolloutBody }), async (req, reply) => {
    const r = coordinator.rollouts.create(req.body as RolloutInput, actor(req));
    return reply.status(201).send(coordinator.rollouts.detail(r.id));
  });
  app.get(
    '/api/v1/rollouts',
    merge({
      tags: ['rollouts'],
      querystring: { type: 'object', additionalProperties: false, properties: { limit: { type: 'string', pattern: '^[0-9]{1,4}$' } } },
    }),
    async (req) => {
      const q = req.query as { limit?: string };
      return { rollouts: coordinator.store.rollouts(q.limit ? Number(q.limit) : 100) };
    },
  );
  const idParams = { type: 'object', additionalProperties: false, required: ['id'], properties: { id: S.rolloutId } };
  app.get('/api/v1/rollouts/:id', merge({ tags: ['rollouts'], params: idParams }), async (req) => coordinator.rollouts.detail((req.params as { id: string }).id));
  app.get(
    '/api/v1/rollouts/:id/events',
    merge({
      tags: ['rollouts'],
      params: idParams,
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: { after: { type: 'string', pattern: '^[0-9]{1,15}$' }, limit: { type: 'string', pattern: '^[0-9]{1,5}$' } },
      },
    }),
    async (req) => {
      const { id } = req.params as { id: string };
      if (!coordinator.store.rollout(id)) throw new CodedError('E_NOT_FOUND', `no rollout ${id}`);
      const q = req.query as { after?: string; limit?: string };
      return { events: coordinator.store.events({ rolloutId: id, after: q.after ? Number(q.after) : 0, limit: q.limit ? Number(q.limit) : 1000 }) };
    },
  );
  for (const action of ['pause', 'resume', 'abort', 'rollback', 'approve'] as OperatorAction[]) {
    app.post(`/api/v1/rollouts/:id/${action}`, { ...merge({ tags: ['rollouts'], params: idParams, body: actionBody }), preValidation: async (req: FastifyRequest) => { if (req.body == null) req.body = {}; } }, async (req) => {
      const { id } = req.params as { id: string };
      const b = (req.body ?? {}) as { reason?: string };
      coordinator.rollouts.action(id, action, actor(req), b.reason ?? null);
      return coordinator.rollouts.detail(id);
    });
  }
  app.get('/api/v1/fleet', merge({ tags: ['fleet'] }), async () => coordinator.fleetWatch());
  app.get('/api/v1/events', merge({
    tags: ['audit'],
    querystring: { type: 'object', additionalProperties: false, properties: { after: { type: 'string', pattern: '^[0-9]{1,15}$' } } },
  }), async (req) => ({ events: coordinator.store.events({ after: Number((req.query as { after?: string }).after ?? 0) }) }));

  // Empty-bodied POSTs (pause etc.) are fine: treat an empty JSON body as {}.
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    const text = String(body);
    if (text.trim() === '') return done(null, {});
    try {
      done(null, JSON.parse(text));
    } catch (err) {
      const e = new CodedError('E_BAD_MESSAGE', `body is not JSON: ${(err as Error).message}`, { field: 'body', reason: 'not JSON' });
      done(e as never, undefined);
    }
  });
  return app;
}
