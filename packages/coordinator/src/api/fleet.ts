/** /api/v1/fleet: the fleet watch (versions, heights, nodes down, the disruption budget, alerts). */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FleetWatch } from '../engine/fleet-view.js';
import { operatorRoute } from './schemas.js';

export interface FleetRoutesOptions {
  fleet: { watch(): FleetWatch };
}

export const fleetRoutes: FastifyPluginAsyncTypebox<FleetRoutesOptions> = async (app, { fleet }) => {
  app.get('/api/v1/fleet', { schema: operatorRoute({ tags: ['fleet'] }) }, async () => fleet.watch());
};
