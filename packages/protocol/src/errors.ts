/**
 * The error-code catalogue. Every failure an operator can see carries one of
 * these codes, so it can be searched for in logs, the API and docs/errors.md.
 * Codes are stable: add new ones, never rename or reuse.
 */
export const ERROR_CODES = {
  // Messages and protocol
  E_BAD_MESSAGE: 'A message or request body does not match its schema.',
  E_PROTOCOL_VERSION: 'The peer speaks an incompatible major protocol version.',
  E_AUTH: 'Missing, unknown or revoked credentials.',
  E_FORBIDDEN: 'The credentials are valid but the role may not do this.',
  E_DUPLICATE_COMMAND: 'A command id was delivered again with different content.',
  // Version paths
  E_BAD_VERSION: 'A version string is not valid semver.',
  E_SAME_VERSION: 'The node already runs the target version.',
  E_DOWNGRADE: 'The target is older than the running version and downgrades were not allowed.',
  E_UNSUPPORTED_PATH: 'The version jump skips a major version; upgrade one major at a time.',
  E_MAJOR_NOT_APPROVED: 'A major upgrade needs an explicit approval and an open maintenance window.',
  // Agent preflight and artifact
  E_CONFIG: 'The configuration is invalid.',
  E_BUSY: 'Another step or command is already running on this node.',
  E_DISK_SPACE: 'Not enough free disk space for the backup and the artifact.',
  E_SERVICE_MISSING: 'The guts-node service or binary could not be found.',
  E_FETCH: 'The artifact could not be downloaded.',
  E_CHECKSUM: 'The artifact sha256 does not match the expected checksum.',
  E_SIGNATURE: 'The artifact signature is invalid for the configured release key.',
  E_SIGNATURE_MISSING: 'A release key is configured but the artifact is unsigned.',
  E_VERSION_MISMATCH: 'The binary or the running node reports a version other than the target.',
  E_NOT_STAGED: 'The command expects a pre-staged artifact but none matches.',
  // Agent upgrade steps
  E_BACKUP: 'The backup could not be completed.',
  E_RESTORE: 'A backup could not be restored.',
  E_STOP: 'The service did not stop.',
  E_INSTALL: 'The new binary could not be installed.',
  E_MIGRATION: 'The data migration failed.',
  E_START: 'The service did not start or exited.',
  E_HEALTH_TIMEOUT: 'The node did not become ready in time.',
  E_SYNC_TIMEOUT: 'The node did not catch up with its peers in time.',
  E_PEERS: 'At its deadline the node still reports p2p up (or down) with fewer connected peers than required.',
  E_CONSENSUS: 'The consensus engine did not leave its starting states in time, or the finalized height did not advance.',
  E_SMOKE: 'The operator smoke command failed.',
  E_METRICS_REGRESSION: 'Error rate or latency rose past the configured limit.',
  E_ROLLBACK_FAILED: 'The automatic rollback did not bring the old version back healthy.',
  E_NOTHING_TO_ROLLBACK: 'There is no completed upgrade with a backup to roll back.',
  E_INTERRUPTED: 'The agent was interrupted mid-step and recovered on restart.',
  E_INTERNAL: 'An unexpected internal error.',
  // Coordinator
  E_NOT_FOUND: 'No such node or rollout.',
  E_CONFLICT: 'Conflicts with an active rollout or existing resource.',
  E_INVALID_STATE: 'The action is not valid in the current state.',
  E_DISRUPTION_BUDGET: 'Taking another node down would exceed f.',
  E_WINDOW_CLOSED: 'No approved maintenance window is open.',
  E_NOT_APPROVED: 'The rollout needs approval before it can start.',
  E_AGENT_LOST: 'The agent stopped reporting mid-step.',
  E_CANARY_FAILED: 'The canary failed its soak checks.',
  E_CHAIN_STALL: 'The chain stopped finalizing.',
  E_NODE_FAILED: 'A node failed its upgrade.',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CODES, value);
}

/** An error that carries a catalogue code and optional evidence. */
export class CodedError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(`${code}: ${message}`);
    this.name = 'CodedError';
    this.code = code;
    this.details = details;
  }
}

/** The code of any thrown value: its own when it carries one, else E_INTERNAL. */
export function errorCodeOf(err: unknown): ErrorCode {
  if (err instanceof CodedError) return err.code;
  const code = (err as { code?: unknown } | null)?.code;
  return isErrorCode(code) ? code : 'E_INTERNAL';
}
