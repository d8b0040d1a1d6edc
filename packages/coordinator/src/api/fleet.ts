/** /api/v1/fleet: the fleet watch (versions, heights, nodes down, the disruption budget, the chain's view, alerts). */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { CodedError } from '@guts-upgrade/protocol';
import { Type } from '@sinclair/typebox';
import type { FleetWatch } from '../engine/fleet-view.js';
import { actorOf } from './auth.js';
import { operatorRoute } from './schemas.js';

export interface FleetRoutesOptions {
  fleet: {
    watch(): FleetWatch;
    /** The validator sets the agents report now, by digest, for an operator to confirm. */
    reportedSets(): { digest: string; epoch: number; nodes: string[] }[];
    confirmSet(digest: string, actor: string): { epoch: number } | null;
  };
}

const ConfirmBody = Type.Object({ digest: Type.String({ pattern: '^[0-9a-f]{16}$' }) }, { additionalProperties: false });

export const fleetRoutes: FastifyPluginAsyncTypebox<FleetRoutesOptions> = async (app, { fleet }) => {
  app.get('/api/v1/fleet', { schema: operatorRoute({ tags: ['fleet'] }) }, async () => ({ ...fleet.watch(), reportedSets: fleet.reportedSets() }));

  // With fewer managed validators reporting than f + 1, the set is believed only on an operator's word.
  app.post('/api/v1/chain/confirm', { schema: operatorRoute({ tags: ['fleet'], body: ConfirmBody }) }, async (req) => {
    const r = fleet.confirmSet(req.body.digest, actorOf(req));
    if (!r) throw new CodedError('E_CHAIN_UNCONFIRMED', `no agent reports a validator set with digest ${req.body.digest}`, { field: 'digest' });
    return { digest: req.body.digest, epoch: r.epoch, confirmed: true };
  });
};
