/** /api/v1/events: the audit log, oldest first, after a sequence number. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { Audit } from '../engine/audit.js';
import { Digits, operatorRoute } from './schemas.js';

export interface AuditRoutesOptions {
  audit: Pick<Audit, 'events'>;
}

const EventsQuery = Type.Object({ after: Type.Optional(Digits(15)) }, { additionalProperties: false });

export const auditRoutes: FastifyPluginAsyncTypebox<AuditRoutesOptions> = async (app, { audit }) => {
  app.get('/api/v1/events', { schema: operatorRoute({ tags: ['audit'], querystring: EventsQuery }) }, async (req) => ({
    events: audit.events(Number(req.query.after ?? 0)),
  }));
};
