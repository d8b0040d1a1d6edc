/** Liveness, readiness and Prometheus metrics: open to anyone who can reach the port. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { Metrics } from '../metrics.js';

export interface HealthRoutesOptions {
  metrics: Pick<Metrics, 'render' | 'registry'>;
  /** False while the coordinator is shutting down. */
  ready: () => boolean;
}

export const healthRoutes: FastifyPluginAsyncTypebox<HealthRoutesOptions> = async (app, { metrics, ready }) => {
  app.get('/health/live', { schema: { security: [], hide: false } }, async () => ({ status: 'up' }));
  app.get('/health/ready', { schema: { security: [] } }, async (_req, reply) => {
    const ok = ready();
    return reply.status(ok ? 200 : 503).send({ status: ok ? 'up' : 'down' });
  });
  app.get('/metrics', { schema: { security: [] } }, async (_req, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.render();
  });
};
