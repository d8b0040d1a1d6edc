/**
 * Every websocket message between agent and coordinator: one TypeBox schema per
 * message, from which both the JSON schema and the TypeScript type come.
 *
 * Objects accept unknown extra properties on purpose: a peer on a newer minor
 * protocol version may add fields, and an older peer must still accept them.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import { NODE_LOG_LINE_CHARS, NODE_LOG_LINES } from './evidence.js';

// ---------------------------------------------------------------- primitives

export const VersionSchema = Type.String({
  pattern: '^v?\\d+\\.\\d+\\.\\d+(?:-[0-9A-Za-z.-]+)?(?:\\+[0-9A-Za-z.-]+)?$',
  maxLength: 64,
  description: 'a semver version',
});
export const NodeIdSchema = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$', description: 'a validator name' });
export const CommandIdSchema = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$' });
export const Sha256Schema = Type.String({ pattern: '^[0-9a-f]{64}$', description: 'lowercase hex sha256' });
export const UrlSchema = Type.String({ pattern: '^https?://[^\\s]+$', maxLength: 2048 });
export const ErrorCodeSchema = Type.String({ pattern: '^E_[A-Z0-9_]+$', maxLength: 64 });
export const TimestampSchema = Type.String({ pattern: '^\\d{4}-\\d{2}-\\d{2}T[0-9:.]+Z$', description: 'ISO 8601 UTC' });
const Count = Type.Integer({ minimum: 0 });
const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);

export const HealthSchema = Type.Union([Type.Literal('up'), Type.Literal('down'), Type.Literal('unknown')]);
export type Health = Static<typeof HealthSchema>;

export const STEP_NAMES = ['preflight', 'fetch', 'backup', 'stop', 'install', 'migrate', 'start', 'verify', 'commit', 'rollback'] as const;
export const StepNameSchema = Type.Union(STEP_NAMES.map((s) => Type.Literal(s)));
export type StepName = (typeof STEP_NAMES)[number];

export const COMMAND_KINDS = ['prepare', 'upgrade', 'rollback'] as const;
export const CommandKindSchema = Type.Union(COMMAND_KINDS.map((k) => Type.Literal(k)));
export type CommandKind = (typeof COMMAND_KINDS)[number];

// ---------------------------------------------------------------- shared parts

/** Cumulative request counters of the node since it started, and recent latency. */
export const NodeMetricsSchema = Type.Object({
  requestsTotal: Count,
  errorsTotal: Count,
  /** Mean request latency over the last scrape interval, in milliseconds. */
  latencyMs: Nullable(Type.Number({ minimum: 0 })),
  scrapedAt: TimestampSchema,
});
export type NodeMetrics = Static<typeof NodeMetricsSchema>;

export const PubkeySchema = Type.String({ pattern: '^[0-9a-fA-F]{2,256}$', description: "a validator's public key in hex" });

/** The chain's validator set as the node reports it (/api/consensus/validators). */
export const ValidatorSetSchema = Type.Object({
  epoch: Count,
  totalWeight: Count,
  quorumWeight: Count,
  validators: Type.Array(Type.Object({ name: Type.String({ maxLength: 128 }), pubkey: PubkeySchema, weight: Count, active: Type.Boolean() }), {
    maxItems: 1024,
  }),
});
export type ValidatorSetReport = Static<typeof ValidatorSetSchema>;

/** A finalized block as the node reports it (/api/consensus/blocks), reduced to what the liveness rule reads. */
export const FinalizedBlockSchema = Type.Object({
  height: Count,
  blockId: Type.String({ maxLength: 128 }),
  view: Count,
  producer: PubkeySchema,
  signatureCount: Nullable(Count),
});

/**
 * What the node says about the chain: claims, to be weighed against the
 * other agents' (see chain-view.ts in the coordinator). Optional: agents
 * before protocol 1.1 do not send it.
 */
export const ChainReportSchema = Type.Object({
  validators: Nullable(ValidatorSetSchema),
  /** The node's most recent finalized blocks, oldest first. */
  blocks: Type.Array(FinalizedBlockSchema, { maxItems: 64 }),
});
export type ChainReport = Static<typeof ChainReportSchema>;

/** What an agent knows about its node, sent in hello and every heartbeat. */
export const NodeStatusSchema = Type.Object({
  nodeVersion: Nullable(VersionSchema),
  health: HealthSchema,
  ready: Type.Boolean(),
  isLeader: Type.Boolean(),
  currentLeader: Nullable(Type.String({ maxLength: 128 })),
  finalizedHeight: Nullable(Count),
  view: Nullable(Count),
  peerCount: Nullable(Count),
  /**
   * The node's request counters as the agent last scraped them from /metrics,
   * so the coordinator can hold a canary to error-rate and latency limits.
   * Optional: added in protocol 1.0 by agents that can scrape metrics.
   */
  metrics: Type.Optional(NodeMetricsSchema),
  /** The chain as this node sees it (protocol 1.1). */
  chain: Type.Optional(ChainReportSchema),
  /** The command the agent is executing, if any. */
  busy: Nullable(Type.Object({ commandId: CommandIdSchema, kind: CommandKindSchema, step: Nullable(StepNameSchema) })),
});
export type NodeStatus = Static<typeof NodeStatusSchema>;

export const ArtifactSchema = Type.Object({
  version: VersionSchema,
  url: UrlSchema,
  sha256: Sha256Schema,
  /** Base64 ed25519 signature over the digest statement (see signature.ts). */
  signature: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9+/]{86}==$' })),
  /**
   * The artifact's size in bytes (protocol 1.4). When given, the agent stops the
   * download at this many bytes instead of at its configured `fetch.maxBytes`,
   * and refuses a length above that cap. Optional: older coordinators omit it,
   * older agents ignore it.
   */
  length: Type.Optional(Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })),
});
export type Artifact = Static<typeof ArtifactSchema>;

/**
 * The target of a prepare/upgrade command. As an Artifact, but url and sha256
 * are optional: an agent that resolves releases itself
 * (agent config `release`, The Update Framework) downloads from its own
 * repository and trusts only its signed metadata. It then ignores a url given
 * here and refuses a sha256 (or length) that differs from the signed release
 * (E_RELEASE_MISMATCH). An agent without `release` refuses a target lacking
 * either (E_BAD_MESSAGE). The coordinator sends both only when the operator gave
 * them (for agents without a release repository), else the version alone.
 */
export const CommandTargetSchema = Type.Object({
  ...ArtifactSchema.properties,
  url: Type.Optional(UrlSchema),
  sha256: Type.Optional(Sha256Schema),
});
export type CommandTarget = Static<typeof CommandTargetSchema>;

export const CheckResultSchema = Type.Object({
  name: Type.String({ maxLength: 64 }),
  ok: Type.Boolean(),
  detail: Type.Optional(Type.String({ maxLength: 4096 })),
  /** A check that waits for its condition: how long it waited (to success or to its deadline). */
  waitedMs: Type.Optional(Type.Integer({ minimum: 0 })),
  /** The last value the check saw (a version, a consensus state, a peer count, a height). */
  last: Type.Optional(Type.String({ maxLength: 256 })),
  /**
   * false: the node does not report what the check looks at (e.g. its peers),
   * so nothing was measured; ok is then true only because a missing figure
   * does not fail an upgrade. Absent: measured.
   */
  measured: Type.Optional(Type.Boolean()),
});
export type CheckResult = Static<typeof CheckResultSchema>;

export const OUTCOMES = ['succeeded', 'rolled_back', 'failed'] as const;
export const OutcomeSchema = Type.Union(OUTCOMES.map((o) => Type.Literal(o)));
export type Outcome = (typeof OUTCOMES)[number];

// ---------------------------------------------------------------- agent -> coordinator

const envelope = <T extends string>(type: T) => ({
  proto: Type.String({ pattern: '^\\d+\\.\\d+$', description: 'protocol version MAJOR.MINOR' }),
  type: Type.Literal(type),
});

export const ResultSchema = Type.Object({
  ...envelope('result'),
  commandId: CommandIdSchema,
  kind: CommandKindSchema,
  outcome: OutcomeSchema,
  fromVersion: Nullable(VersionSchema),
  toVersion: Nullable(VersionSchema),
  /** The version actually running when the command ended. */
  runningVersion: Nullable(VersionSchema),
  code: Type.Optional(ErrorCodeSchema),
  message: Type.Optional(Type.String({ maxLength: 4096 })),
  migration: Type.Optional(Type.Union([Type.Literal('none'), Type.Literal('automatic'), Type.Literal('manual')])),
  /** Stop to ready, as the agent measured it. */
  downtimeMs: Type.Optional(Type.Number({ minimum: 0 })),
  /**
   * The node's consensus view when the agent last stopped it (protocol 1.2). A
   * block the node produced before that stop has a view at or below it, so
   * only a block in a later view shows the node back on the chain, however late
   * the coordinator comes to believe the earlier one.
   */
  stoppedAtView: Type.Optional(Type.Integer({ minimum: 0 })),
  rollback: Type.Optional(Type.Object({ mode: Type.Union([Type.Literal('binary'), Type.Literal('binary+data')]), ok: Type.Boolean() })),
  evidence: Type.Optional(
    Type.Object({
      checks: Type.Array(CheckResultSchema, { maxItems: 64 }),
      journalTail: Type.Optional(Type.Array(Type.String({ maxLength: 4096 }), { maxItems: 200 })),
      /**
       * The node's own last log lines (journald under systemd, the log file
       * otherwise), on a failure (protocol 1.3); bounded by boundNodeLog.
       */
      nodeLog: Type.Optional(Type.Array(Type.String({ maxLength: NODE_LOG_LINE_CHARS }), { maxItems: NODE_LOG_LINES })),
    }),
  ),
  startedAt: TimestampSchema,
  finishedAt: TimestampSchema,
});

/**
 * What a node is to the chain: a validator (in the set, votes, counts in the
 * safety budget) or a follower (a full node outside the set serving the API:
 * it never votes, so taking it down costs the chain nothing).
 */
export const NODE_ROLES = ['validator', 'follower'] as const;
export const NodeRoleSchema = Type.Union(NODE_ROLES.map((r) => Type.Literal(r)));
export type NodeRole = (typeof NODE_ROLES)[number];

export const HelloSchema = Type.Object({
  ...envelope('hello'),
  nodeId: NodeIdSchema,
  agentVersion: Type.String({ maxLength: 64 }),
  /**
   * The chain validator this node runs as, from the agent's config (protocol
   * 1.1). The coordinator binds the node to it; the node's own
   * is_leader + current_leader confirm it.
   */
  validatorPubkey: Type.Optional(PubkeySchema),
  /**
   * The role the agent's config gives its node (protocol 1.5; absent from older
   * agents). The coordinator refuses a hello whose role differs from the node's
   * registration (E_ROLE_MISMATCH): each side is configured by a person, and
   * neither alone decides that a node may go down outside the safety budget.
   */
  role: Type.Optional(NodeRoleSchema),
  status: NodeStatusSchema,
  /** Results finished while disconnected, so the coordinator learns outcomes after a partition. */
  recentResults: Type.Array(ResultSchema, { maxItems: 50 }),
});

export const HeartbeatSchema = Type.Object({
  ...envelope('heartbeat'),
  nodeId: NodeIdSchema,
  seq: Count,
  status: NodeStatusSchema,
});

export const AckSchema = Type.Object({
  ...envelope('ack'),
  commandId: CommandIdSchema,
  status: Type.Union([Type.Literal('accepted'), Type.Literal('duplicate'), Type.Literal('rejected')]),
  code: Type.Optional(ErrorCodeSchema),
  message: Type.Optional(Type.String({ maxLength: 4096 })),
});

export const ProgressSchema = Type.Object({
  ...envelope('progress'),
  commandId: CommandIdSchema,
  step: StepNameSchema,
  state: Type.Union([Type.Literal('started'), Type.Literal('running'), Type.Literal('done'), Type.Literal('failed'), Type.Literal('skipped')]),
  message: Type.Optional(Type.String({ maxLength: 4096 })),
  percent: Type.Optional(Type.Number({ minimum: 0, maximum: 100 })),
  at: TimestampSchema,
});

// ---------------------------------------------------------------- coordinator -> agent

export const WelcomeSchema = Type.Object({
  ...envelope('welcome'),
  heartbeatIntervalMs: Type.Integer({ minimum: 100, maximum: 600_000 }),
});

export const RefusedSchema = Type.Object({
  ...envelope('refused'),
  code: ErrorCodeSchema,
  message: Type.String({ maxLength: 4096 }),
});

export const UpgradeOptionsSchema = Type.Object({
  /**
   * The rollout allows a downgrade. Informational for agents: a command cannot
   * widen an agent's policy, so a downgrade also needs the host's release.allowDowngrade.
   */
  allowDowngrade: Type.Optional(Type.Boolean()),
  /**
   * The coordinator checked approval and the maintenance window for a major
   * path. Informational for agents: the signed path kind (or, without a
   * repository, the host's release.allowMajor) decides.
   */
  approvedMajor: Type.Optional(Type.Boolean()),
  /** Only use an artifact already staged by a prepare command (halt strategy). */
  requireStaged: Type.Optional(Type.Boolean()),
  /** Highest finalized height seen across the fleet when the command was sent. */
  referenceHeight: Type.Optional(Count),
  /** How far behind referenceHeight the node may be and still count as caught up. */
  syncDistance: Type.Optional(Count),
});
export type UpgradeOptions = Static<typeof UpgradeOptionsSchema>;

const commandBase = <K extends CommandKind>(kind: K) => ({
  ...envelope('command'),
  id: CommandIdSchema,
  kind: Type.Literal(kind),
  rolloutId: Type.Optional(Type.String({ maxLength: 128 })),
  issuedAt: TimestampSchema,
});

/** Fetch, verify and stage the artifact while the node keeps running. */
export const PrepareCommandSchema = Type.Object({
  ...commandBase('prepare'),
  target: CommandTargetSchema,
  options: Type.Optional(UpgradeOptionsSchema),
});
/** The whole single-node pipeline. */
export const UpgradeCommandSchema = Type.Object({
  ...commandBase('upgrade'),
  target: CommandTargetSchema,
  options: Type.Optional(UpgradeOptionsSchema),
});
/** Roll back the last committed upgrade from its backup. */
export const RollbackCommandSchema = Type.Object({
  ...commandBase('rollback'),
  /** The version the operator expects to return to; refused if the backup holds another. */
  toVersion: Type.Optional(VersionSchema),
});

export type Hello = Static<typeof HelloSchema>;
export type Heartbeat = Static<typeof HeartbeatSchema>;
export type Ack = Static<typeof AckSchema>;
export type Progress = Static<typeof ProgressSchema>;
export type Result = Static<typeof ResultSchema>;
export type Welcome = Static<typeof WelcomeSchema>;
export type Refused = Static<typeof RefusedSchema>;
export type PrepareCommand = Static<typeof PrepareCommandSchema>;
export type UpgradeCommand = Static<typeof UpgradeCommandSchema>;
export type RollbackCommand = Static<typeof RollbackCommandSchema>;
export type Command = PrepareCommand | UpgradeCommand | RollbackCommand;

export type AgentMessage = Hello | Heartbeat | Ack | Progress | Result;
export type CoordinatorMessage = Welcome | Refused | Command;
export type AgentMessageType = AgentMessage['type'];
export type CoordinatorMessageType = CoordinatorMessage['type'];

/** Messages without the envelope, for building them. */
export type Body<M> = M extends unknown ? Omit<M, 'proto' | 'type'> : never;

// ---------------------------------------------------------------- schema tables

export const AGENT_MESSAGE_SCHEMAS = {
  hello: HelloSchema,
  heartbeat: HeartbeatSchema,
  ack: AckSchema,
  progress: ProgressSchema,
  result: ResultSchema,
} as const;

export const COORDINATOR_MESSAGE_SCHEMAS = {
  welcome: WelcomeSchema,
  refused: RefusedSchema,
  command: Type.Union([PrepareCommandSchema, UpgradeCommandSchema, RollbackCommandSchema]),
} as const;

export const COMMAND_SCHEMAS = {
  prepare: PrepareCommandSchema,
  upgrade: UpgradeCommandSchema,
  rollback: RollbackCommandSchema,
} as const;

function compile<T extends TSchema>(schema: T): TypeCheck<T> {
  return TypeCompiler.Compile(schema);
}

export const agentCheckers = Object.fromEntries(Object.entries(AGENT_MESSAGE_SCHEMAS).map(([k, s]) => [k, compile(s as TSchema)])) as Record<
  AgentMessageType,
  TypeCheck<TSchema>
>;

export const commandCheckers = Object.fromEntries(Object.entries(COMMAND_SCHEMAS).map(([k, s]) => [k, compile(s as TSchema)])) as Record<
  CommandKind,
  TypeCheck<TSchema>
>;

export const coordinatorCheckers = {
  welcome: compile(WelcomeSchema),
  refused: compile(RefusedSchema),
} as Record<Exclude<CoordinatorMessageType, 'command'>, TypeCheck<TSchema>>;
