/** /api/v1/rollouts: plan, create, list and show rollouts, and the operator actions on them. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { CloneType, Type } from '@sinclair/typebox';
import { CommandTargetSchema } from '@guts-upgrade/protocol';
import type { RolloutService } from '../engine/rollout-service.js';
import { STRATEGIES } from '../model.js';
import { ACTIONS, type OperatorAction } from '../states.js';
import { actorOf } from './auth.js';
import { Digits, NodeId, RolloutId, operatorRoute, stringEnum } from './schemas.js';

export interface RolloutRoutesOptions {
  rollouts: Pick<RolloutService, 'plan' | 'create' | 'list' | 'detail' | 'events' | 'action'>;
}

// The command target as the protocol defines it (what the agents will be sent), but strict:
// an operator's request with an unknown field is a mistake, not a newer peer. The descriptions
// are what /docs shows. That url and sha256 come together is checked by the rollout service
// (E_BAD_MESSAGE), not here: OpenAPI 3.0 has no keyword for it.
const field = CommandTargetSchema.properties;
const ONLY_UNSIGNED = 'Only for agents that run with allowUnsigned: true, i.e. without a release repository; give url and sha256 together or neither.';
const Target = Type.Object(
  {
    version: CloneType(field.version, {
      description: 'The version to upgrade to. Each agent resolves it through its signed release repository (agent config release): give it alone.',
    }),
    url: CloneType(field.url, { description: `Where agents download the guts-node binary. ${ONLY_UNSIGNED} An agent with a release repository ignores it.` }),
    sha256: CloneType(field.sha256, {
      description: `The binary's sha256, lowercase hex. ${ONLY_UNSIGNED} An agent with a release repository refuses one that differs from the signed release (E_RELEASE_MISMATCH).`,
    }),
    length: CloneType(field.length, {
      description:
        "The binary's size in bytes: agents stop its download there instead of at their fetch.maxBytes; one that differs from the signed release is refused.",
    }),
    signature: CloneType(field.signature, {
      description: "Base64 ed25519 signature of the release key over the binary's sha256; checked by agents with releasePublicKey set.",
    }),
  },
  {
    additionalProperties: false,
    description:
      'A version alone (the normal case: agents resolve it through their signed release repository), or with url and sha256 for agents with allowUnsigned: true.',
  },
);

const CanaryLimits = Type.Object(
  {
    maxErrorRateIncrease: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    maxLatencyFactor: Type.Optional(Type.Number({ minimum: 1, maximum: 1000 })),
    minLatencyMs: Type.Optional(Type.Number({ minimum: 0, maximum: 3_600_000 })),
    minRequests: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000_000 })),
  },
  { additionalProperties: false },
);

const RolloutOptions = Type.Object(
  {
    maxUnavailable: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
    stabilizationMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 86_400_000 })),
    soakMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 604_800_000 })),
    syncDistance: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000 })),
    syncTimeoutMs: Type.Optional(Type.Integer({ minimum: 1000, maximum: 86_400_000 })),
    haltTimeoutMs: Type.Optional(Type.Integer({ minimum: 1000, maximum: 86_400_000 })),
    autoRollback: Type.Optional(Type.Boolean()),
    allowDowngrade: Type.Optional(Type.Boolean()),
    canary: Type.Optional(NodeId),
    window: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
    requireApproval: Type.Optional(Type.Boolean()),
    requireJudgedSoak: Type.Optional(Type.Boolean()),
    canaryLimits: Type.Optional(CanaryLimits),
  },
  { additionalProperties: false },
);

const RolloutBody = Type.Object(
  {
    target: Target,
    strategy: Type.Optional(stringEnum(STRATEGIES)),
    nodes: Type.Optional(Type.Array(NodeId, { minItems: 1, maxItems: 1000, uniqueItems: true })),
    options: Type.Optional(RolloutOptions),
  },
  { additionalProperties: false },
);

const ActionBody = Type.Object({ reason: Type.Optional(Type.String({ maxLength: 1024 })) }, { additionalProperties: false });
const RolloutParams = Type.Object({ id: RolloutId }, { additionalProperties: false });
const ListQuery = Type.Object({ limit: Type.Optional(Digits(4)) }, { additionalProperties: false });
const EventsQuery = Type.Object({ after: Type.Optional(Digits(15)), limit: Type.Optional(Digits(5)) }, { additionalProperties: false });

const num = (v: string | undefined, d: number) => (v ? Number(v) : d);

export const rolloutRoutes: FastifyPluginAsyncTypebox<RolloutRoutesOptions> = async (app, { rollouts }) => {
  const tags = ['rollouts'];

  app.post('/api/v1/rollouts/plan', { schema: operatorRoute({ tags, body: RolloutBody }) }, async (req) => ({ plan: rollouts.plan(req.body) }));

  app.post('/api/v1/rollouts', { schema: operatorRoute({ tags, body: RolloutBody }) }, async (req, reply) => {
    const r = rollouts.create(req.body, actorOf(req));
    return reply.status(201).send(rollouts.detail(r.id));
  });

  app.get('/api/v1/rollouts', { schema: operatorRoute({ tags, querystring: ListQuery }) }, async (req) => ({
    rollouts: rollouts.list(num(req.query.limit, 100)),
  }));

  app.get('/api/v1/rollouts/:id', { schema: operatorRoute({ tags, params: RolloutParams }) }, async (req) => rollouts.detail(req.params.id));

  app.get('/api/v1/rollouts/:id/events', { schema: operatorRoute({ tags, params: RolloutParams, querystring: EventsQuery }) }, async (req) => ({
    events: rollouts.events(req.params.id, num(req.query.after, 0), num(req.query.limit, 1000)),
  }));

  for (const action of Object.keys(ACTIONS) as OperatorAction[]) {
    app.post(
      `/api/v1/rollouts/:id/${action}`,
      {
        schema: operatorRoute({ tags, params: RolloutParams, body: ActionBody }),
        // An action needs no body: a POST without one is an action without a reason.
        preValidation: async (req) => {
          if (req.body == null) req.body = {};
        },
      },
      async (req) => {
        rollouts.action(req.params.id, action, actorOf(req), req.body.reason ?? null);
        return rollouts.detail(req.params.id);
      },
    );
  }
};
