/** /api/v1/nodes: the nodes the coordinator manages (validators and followers). */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { NODE_ROLES, PubkeySchema } from '@guts-upgrade/protocol';
import { Type } from '@sinclair/typebox';
import type { NodeRegistry } from '../engine/node-registry.js';
import { actorOf } from './auth.js';
import { NodeId, operatorRoute, stringEnum } from './schemas.js';

export interface NodeRoutesOptions {
  nodes: Pick<NodeRegistry, 'register' | 'remove' | 'list'>;
}

const RegisterBody = Type.Object(
  {
    id: NodeId,
    address: Type.Optional(Type.String({ maxLength: 256 })),
    /** The chain validator the node runs as (public key, hex). */
    pubkey: Type.Optional(PubkeySchema),
    /**
     * validator (default) or follower: a full node outside the validator set, upgraded outside
     * the safety budget and never bound to a chain validator (its agent must say the same role).
     */
    role: Type.Optional(stringEnum(NODE_ROLES)),
  },
  { additionalProperties: false },
);
const NodeParams = Type.Object({ id: NodeId }, { additionalProperties: false });

export const nodeRoutes: FastifyPluginAsyncTypebox<NodeRoutesOptions> = async (app, { nodes }) => {
  app.get('/api/v1/nodes', { schema: operatorRoute({ tags: ['nodes'] }) }, async () => ({ nodes: nodes.list() }));

  app.post('/api/v1/nodes', { schema: operatorRoute({ tags: ['nodes'], body: RegisterBody }) }, async (req, reply) => {
    const r = nodes.register(req.body.id, req.body.address ?? null, actorOf(req), req.body.pubkey ?? null, req.body.role ?? 'validator');
    return reply.status(201).send({ id: r.id, token: r.token, note: 'the token is shown only once; configure it in the agent' });
  });

  app.delete('/api/v1/nodes/:id', { schema: operatorRoute({ tags: ['nodes'], params: NodeParams }) }, async (req) => {
    nodes.remove(req.params.id, actorOf(req));
    return { id: req.params.id, removed: true };
  });
};
