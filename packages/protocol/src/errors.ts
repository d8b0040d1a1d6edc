/**
 * The error-code catalogue. Every failure an operator can see carries one of
 * these codes, so it can be searched for in logs, the API and docs/errors.md.
 * Codes are stable: add new ones, never rename or reuse.
 *
 * Each entry says what the code means and, for the codes the coordinator's
 * HTTP API answers with, the HTTP status it answers with (any other code is a
 * 500 there): code, message and status sit together, in one place.
 */
export interface ErrorCodeInfo {
  readonly message: string;
  readonly httpStatus?: 400 | 401 | 403 | 404 | 409;
}

export const ERROR_CODES = {
  // Messages and protocol
  E_BAD_MESSAGE: { message: 'A message or request body does not match its schema.', httpStatus: 400 },
  E_PROTOCOL_VERSION: { message: 'The peer speaks an incompatible major protocol version.' },
  E_AUTH: { message: 'Missing, unknown or revoked credentials.', httpStatus: 401 },
  E_FORBIDDEN: { message: 'The credentials are valid but the role may not do this.', httpStatus: 403 },
  E_DUPLICATE_COMMAND: { message: 'A command id was delivered again with different content.' },
  // Version paths
  E_BAD_VERSION: { message: 'A version string is not valid semver.', httpStatus: 400 },
  E_SAME_VERSION: { message: 'The node already runs the target version.', httpStatus: 400 },
  E_DOWNGRADE: { message: 'The target is older than the running version and downgrades were not allowed.', httpStatus: 400 },
  E_UNSUPPORTED_PATH: { message: 'The version jump skips a major version; upgrade one major at a time.', httpStatus: 400 },
  E_MAJOR_NOT_APPROVED: { message: 'A major upgrade needs an explicit approval and an open maintenance window.', httpStatus: 400 },
  // Agent preflight and artifact
  E_CONFIG: { message: 'The configuration is invalid.' },
  E_BUSY: { message: 'Another step or command is already running on this node.' },
  E_DISK_SPACE: { message: 'Not enough free disk space for the backup and the artifact.' },
  E_SERVICE_MISSING: { message: 'The guts-node service or binary could not be found.' },
  E_FETCH: { message: 'The artifact could not be downloaded.' },
  E_CHECKSUM: { message: 'The artifact sha256 does not match the expected checksum.' },
  E_SIGNATURE: { message: 'The artifact signature is invalid for the configured release key.' },
  E_SIGNATURE_MISSING: { message: 'A release key is configured but the artifact is unsigned.' },
  E_VERSION_MISMATCH: { message: 'The binary or the running node reports a version other than the target.' },
  E_NOT_STAGED: { message: 'The command expects a pre-staged artifact but none matches.' },
  // Agent upgrade steps
  E_BACKUP: { message: 'The backup could not be completed.' },
  E_RESTORE: { message: 'A backup could not be restored.' },
  E_STOP: { message: 'The service did not stop.' },
  E_INSTALL: { message: 'The new binary could not be installed.' },
  E_MIGRATION: { message: 'The data migration failed.' },
  E_START: { message: 'The service did not start or exited.' },
  E_HEALTH_TIMEOUT: { message: 'The node did not become ready in time.' },
  E_SYNC_TIMEOUT: { message: 'The node did not catch up with its peers in time.' },
  E_PEERS: { message: 'At its deadline the node still reports p2p up (or down) with fewer connected peers than required.' },
  E_CONSENSUS: { message: 'The consensus engine did not leave its starting states in time, or the finalized height did not advance.' },
  E_SMOKE: { message: 'The operator smoke command failed.' },
  E_METRICS_REGRESSION: { message: 'Error rate or latency rose past the configured limit.' },
  E_ROLLBACK_FAILED: { message: 'The automatic rollback did not bring the old version back healthy.' },
  E_NOTHING_TO_ROLLBACK: { message: 'There is no completed upgrade with a backup to roll back.' },
  E_INTERRUPTED: { message: 'The agent was interrupted mid-step and recovered on restart.' },
  E_INTERNAL: { message: 'An unexpected internal error.' },
  // Coordinator
  E_NOT_FOUND: { message: 'No such node or rollout.', httpStatus: 404 },
  E_CONFLICT: { message: 'Conflicts with an active rollout or existing resource.', httpStatus: 409 },
  E_INVALID_STATE: { message: 'The action is not valid in the current state.', httpStatus: 409 },
  E_DISRUPTION_BUDGET: { message: 'Taking another node down would exceed f.', httpStatus: 400 },
  E_WINDOW_CLOSED: { message: 'No approved maintenance window is open.' },
  E_NOT_APPROVED: { message: 'The rollout needs approval before it can start.' },
  E_AGENT_LOST: { message: 'The agent stopped reporting mid-step.' },
  E_CANARY_FAILED: { message: 'The canary failed its soak checks.' },
  E_CHAIN_STALL: { message: 'The chain stopped finalizing.' },
  E_NODE_FAILED: { message: 'A node failed its upgrade.' },
} as const satisfies Record<string, ErrorCodeInfo>;

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CODES, value);
}

/** The HTTP status the API answers a code with (500 for codes that are not the caller's doing). */
export function httpStatusOf(code: ErrorCode): number {
  return (ERROR_CODES[code] as ErrorCodeInfo).httpStatus ?? 500;
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
