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
  readonly httpStatus?: 400 | 401 | 403 | 404 | 409 | 413 | 429;
  /** What an operator does next when they see this code (docs/errors.md shows it beside the meaning). */
  readonly action: string;
}

export const ERROR_CODES = {
  // Messages and protocol
  E_BAD_MESSAGE: {
    message: 'A message or request body does not match its schema.',
    httpStatus: 400,
    action: 'Fix the request or message named in the error (its field and reason); nothing was changed.',
  },
  E_PROTOCOL_VERSION: {
    message: 'The peer speaks an incompatible major protocol version.',
    action: 'Upgrade the agent or the coordinator so both speak the same major protocol version.',
  },
  E_AUTH: {
    message: 'Missing, unknown or revoked credentials.',
    httpStatus: 401,
    action: "Check the token: `guts-upgrade nodes add` prints an agent's token once; operators' tokens are in the coordinator's configuration.",
  },
  E_FORBIDDEN: {
    message: 'The credentials are valid but the role may not do this.',
    httpStatus: 403,
    action: 'Use an operator token; viewer tokens may only read.',
  },
  E_BODY_TOO_LARGE: {
    message: 'A request body is larger than the API accepts.',
    httpStatus: 413,
    action: 'Send a smaller body: no API request needs more than 256 KiB (a long node list or reason is the usual cause); nothing was changed.',
  },
  E_DUPLICATE_KEY: {
    message: 'A JSON body names the same key twice in one object.',
    httpStatus: 400,
    action: 'Send each key once (the error names the field): which of two values was meant cannot be told, so nothing was changed.',
  },
  E_RATE_LIMITED: {
    message: 'Too many API requests for one token, or too many messages from one agent, in too short a time.',
    httpStatus: 429,
    action:
      "Wait the Retry-After seconds and retry slower; an agent cut off reconnects by itself: find why it sends so much (`journalctl -u guts-upgrade-agent`). Raise `limits.api` or `limits.agentMessages` in the coordinator's configuration only for load you expect.",
  },
  E_DUPLICATE_COMMAND: {
    message: 'A command id was delivered again with different content.',
    action: 'A command id was reused with other content: start a new rollout instead of replaying an old command.',
  },
  // Version paths
  E_BAD_VERSION: { message: 'A version string is not valid semver.', httpStatus: 400, action: 'Give the version as semver, e.g. 1.1.0.' },
  E_SAME_VERSION: { message: 'The node already runs the target version.', httpStatus: 400, action: 'Nothing to do: the node already runs that version.' },
  E_DOWNGRADE: {
    message: 'The target is older than the running version and downgrades were not allowed.',
    httpStatus: 400,
    action:
      'Check the target version; a deliberate downgrade needs `--allow-downgrade` on the rollout and `release.allowDowngrade` in the configuration of each agent it moves.',
  },
  E_UNSUPPORTED_PATH: {
    message: 'The version jump skips a major version; upgrade one major at a time.',
    httpStatus: 400,
    action: 'Upgrade one major version at a time: roll out the intermediate major first.',
  },
  E_MAJOR_NOT_APPROVED: {
    message:
      'A major upgrade needs an explicit approval and an open maintenance window; an agent takes it from the signed release (path kind major), or without a repository from its own `release.allowMajor`.',
    httpStatus: 400,
    action: 'Use the `halt` strategy with approval inside a maintenance window (`guts-upgrade rollout approve <id>`).',
  },
  // Agent preflight and artifact
  E_CONFIG: {
    message: 'The configuration is invalid.',
    action: 'Run `guts-upgrade-agent config validate` or `guts-upgrade-coordinator config validate`, fix the key it names, then restart the service.',
  },
  E_BUSY: {
    message: 'Another step or command is already running on this node.',
    action: 'Wait for the running command (`guts-upgrade-agent status`); if its process is gone, run `guts-upgrade-agent recover`.',
  },
  E_DISK_SPACE: {
    message: 'Not enough free disk space for the backup and the artifact.',
    action: 'Free space where the error says (`df -h`), or lower `backup.retention`, then retry.',
  },
  E_SERVICE_MISSING: {
    message: 'The guts-node service or binary could not be found.',
    action: 'Check `node.binary` and `service` in the agent configuration and that the unit exists (`systemctl status guts-node`).',
  },
  E_FOREIGN_NODE: {
    message: 'A guts-node answers on the node API, but it is not the process the agent runs.',
    action:
      'A node was started outside the agent (by hand or an older tool): find it (`ss -ltnp` on the API port), stop it, then start the node the agent manages (`systemctl start guts-node`, or let the process driver start it) and retry.',
  },
  E_FETCH: {
    message: 'The artifact could not be downloaded.',
    action:
      "Check the artifact URL is reachable from the host (`curl -I URL`); the reason (HTTP status or network error) is in the agent's log only, never in the result. The agent retries with resume before it gives up.",
  },
  E_FETCH_TOO_LARGE: {
    message: 'The artifact download passed its size bound (the length in the command, else fetch.maxBytes) and was cut off there.',
    action:
      'Check the URL serves the release binary; if the release really is larger, give its length with the command or raise `fetch.maxBytes` in the agent configuration. Nothing was kept in staging.',
  },
  E_FETCH_REDIRECT: {
    message: 'The artifact URL redirected more than 5 times, or to an origin the agent does not allow.',
    action:
      "Give the artifact's final URL (`curl -sIL URL` shows the redirects), or list the mirror's origin in `fetch.allowedOrigins` in the agent configuration; the agent's log names the refused redirect.",
  },
  E_CHECKSUM: {
    message: 'The artifact sha256 does not match the expected checksum.',
    action: 'Check the sha256 given to the rollout against the release; never bypass it: the download may be corrupt or tampered with.',
  },
  E_SIGNATURE: {
    message: 'The artifact signature is invalid for the configured release key.',
    action: 'The artifact is not signed by the configured release key: check `releasePublicKey` and where the artifact came from.',
  },
  E_SIGNATURE_MISSING: {
    message: 'A release key is configured but the artifact is unsigned.',
    action: "Give the release's signature with the rollout (`--signature`).",
  },
  E_VERSION_MISMATCH: {
    message: 'The binary or the running node reports a version other than the target.',
    action: "The binary is not the release it claims: check the artifact URL and version, and that no other process holds the node's ports.",
  },
  E_NOT_STAGED: {
    message: 'The command expects a pre-staged artifact but none matches.',
    action: 'Run the prepare step first, or start the rollout without requiring a staged artifact.',
  },
  // Container hosts (agent config service.driver docker or compose)
  E_ARTIFACT_INVALID: {
    message:
      'The release is not an image archive holding exactly one image, or the engine does not hold that image after loading it; or the release names a registry image and this host is not a container host.',
    action:
      'A docker or compose host installs releases published as `docker save` archives or as registry images (`release add --image`): check that the release owner signed the image archive (not the bare binary) for this version, and `docker load -i FILE` it by hand to see what the engine says. A systemd or process host needs the binary: sign that for the version, not an image.',
  },
  E_IMAGE_PULL: {
    message:
      'The release image could not be pulled by its digest: the registry did not answer, does not hold that manifest, or the engine holds no image with that digest after the pull.',
    action:
      'Pull it by hand on the host as the error shows it (`docker pull HOST/NAME@sha256:...`): check the registry is reachable from the engine (and in its `insecure-registries` if it speaks plain http), that the release owner pushed the image the signed release names, and any registry login the engine needs. Nothing was changed on the node.',
  },
  E_DOCKER_ENGINE: {
    message: 'The Docker engine does not answer on its API socket.',
    action:
      'Check `service.dockerSocket` in the agent configuration and that dockerd runs (`docker -H unix://SOCKET info`); the agent needs read-write access to that socket.',
  },
  E_COMPOSE: {
    message: "docker-compose refused the operator's compose file, the agent's override, or the service.",
    action:
      'Run `docker-compose -f FILE -f OVERRIDE config` as the error shows it: fix `service.file` / `service.service` in the agent configuration, or the compose file it names; the agent never edits that file.',
  },
  // Blue-green upgrades of follower nodes (agent config `blueGreen`)
  E_BLUE_GREEN_VALIDATOR: {
    message: 'Blue-green upgrades are for followers only: this node is (or is configured as) a validator.',
    action:
      'Two containers signing with one validator key risk double signing: remove `blueGreen` from the agent configuration of a validator (it upgrades in place, stop then start); set `role: follower` only on nodes outside the validator set.',
  },
  E_BLUE_GREEN_MOUNT: {
    message: "The new container would see the live node's data: the data dir is not a mount of its own in the live container.",
    action:
      "Mount the node's data dir into its container as its own bind mount (`-v /srv/guts/data:/srv/guts/data`), apart from its config; the agent gives the new container a copy in `blueGreen.dataCopyDir` instead, never the live data.",
  },
  E_PROXY_RELOAD: {
    message: "The reverse proxy's upstream could not be rewritten, or the proxy refused to reload with it.",
    action:
      "The agent put the previous upstream file back: check `blueGreen.proxy` (config, reload or pidFile) and run the proxy's own config test (`nginx -t -c FILE`, `haproxy -c -f FILE`) with the error's file; traffic still goes to the old container.",
  },
  // Releases resolved through The Update Framework (agent config `release`)
  E_RELEASE_UNKNOWN: {
    message: 'The release repository has no signed target for the requested version.',
    action:
      'Check the version, and that the release owner published it (`guts-upgrade release add`) and the repository serves the new metadata; the agent installs only releases its repository signs.',
  },
  E_RELEASE_EXPIRED: {
    message: "The release repository's metadata has expired: it may be frozen on an old state.",
    action:
      'The release owner refreshes the timestamp (`guts-upgrade release timestamp`) and republishes the metadata; if it is fresh on the repository, something between the agent and it serves a stale copy.',
  },
  E_RELEASE_ROLLBACK: {
    message: 'The release repository served metadata older than the agent already trusts (a rollback).',
    action:
      "Nothing was installed. Find out why the repository (or a mirror or proxy on the way) serves an older state; never clear the agent's release cache (`release.cacheDir`) to get past it.",
  },
  E_RELEASE_SIGNATURE: {
    message: 'Release metadata is not signed by enough of the keys its role requires (bad signature or below threshold).',
    action:
      'Nothing was installed. The release owner signs with the threshold of keys the root names; if they did, the metadata was altered: treat the repository as compromised.',
  },
  E_RELEASE_TAMPERED: {
    message: 'A release file does not match the length or hashes its signed metadata gives (or the server sent more bytes than that).',
    action: "Nothing was installed or kept. The repository or the network altered the file: check the repository against the release owner's copy.",
  },
  E_RELEASE_INCONSISTENT: {
    message: 'Release metadata files come from different repository states (mix-and-match) or do not match what their signed parent says.',
    action:
      'Nothing was installed. The repository must publish timestamp, snapshot and targets together (`guts-upgrade release add` writes all three); retry after it is consistent, or investigate who mixed them.',
  },
  E_UNSIGNED_REFUSED: {
    message: 'The agent has no trusted root (release.repository and release.root) and does not run unsigned code unless its own configuration allows it.',
    action:
      'Publish releases with `guts-upgrade release` and set `release.repository` and `release.root` in the agent configuration (docs/runbook.md); only for a lab host, set `allowUnsigned: true` there.',
  },
  E_RELEASE_POLICY: {
    message:
      "The signed release does not allow this upgrade: its path kind or minimum running version excludes the node's version, or it is a downgrade the agent's policy forbids.",
    action:
      'Upgrade through the intermediate release the metadata asks for (see its min-from and path kind), or, for a deliberate downgrade, set `release.allowDowngrade` in the agent configuration on the host.',
  },
  E_RELEASE_MISMATCH: {
    message: 'The command names a sha256 or length other than the signed release of that version.',
    action:
      "Nothing was installed. The coordinator was given another artifact than the release owner signed: check the rollout's --sha256 against `guts-upgrade release` output, or omit it.",
  },
  E_RELEASE_UNREACHABLE: {
    message: 'The release repository could not be reached or answered with an error.',
    action:
      "Check `release.repository` in the agent configuration is reachable from the host (`curl -I URL/metadata/timestamp.json`); the agent's log has the reason.",
  },
  E_RELEASE_INVALID: {
    message: 'The release repository served metadata the agent cannot read, or the pinned root is missing or invalid.',
    action:
      "Check `release.root` names the repository's root.json as the release owner published it, and that the repository serves metadata written by `guts-upgrade release`.",
  },
  // Agent upgrade steps
  E_BACKUP: {
    message: 'The backup could not be completed.',
    action: 'Look at `guts-upgrade-agent doctor` (disk, data dir permissions); the node was not touched.',
  },
  E_RESTORE: {
    message: 'A backup could not be restored.',
    action:
      'What the restore replaced was put back (binary, config and data dir; the node restarted if it had been running): run `guts-upgrade-agent backup list` and restore another complete backup with `guts-upgrade-agent backup restore <id>`.',
  },
  E_RESTORE_UNSAFE: {
    message: "A backup's catalogue or archive names a path outside the data dir (or a data dir other than the configured one).",
    action:
      'Nothing was changed. The backup is corrupt or was tampered with: restore another one (`guts-upgrade-agent backup list`) and find out who could write to the backup dir and the agent journal.',
  },
  E_STOP: {
    message: 'The service did not stop.',
    action: 'Find why the node does not stop (`journalctl -u guts-node`), stop it by hand, then `guts-upgrade-agent recover`.',
  },
  E_INSTALL: {
    message: 'The new binary could not be installed.',
    action: "Check disk and permissions of the binary's directory; the old binary was kept (`guts-node.bak`).",
  },
  E_MIGRATION: {
    message: 'The data migration failed.',
    action: 'The agent restored the data and binary; read the migration output in the result, fix the migration, then retry.',
  },
  E_START: {
    message: 'The service did not start or exited.',
    action: "Read the node's last log lines in the result or `journalctl -u guts-node -n 100`; the agent rolled back.",
  },
  E_HEALTH_TIMEOUT: {
    message: 'The node did not become ready in time.',
    action: "Read the node's log; raise `checks.readyTimeoutMs` if the node needs longer to warm up.",
  },
  E_SYNC_TIMEOUT: {
    message: 'The node did not catch up with its peers in time.',
    action: 'Compare heights with `guts-upgrade fleet`; raise `checks.syncTimeoutMs` for a node that needs longer to catch up.',
  },
  E_PEERS: {
    message: 'At its deadline the node still reports p2p up (or down) with fewer connected peers than required.',
    action: 'The node reported fewer peers than `checks.minPeers`: check its p2p address, firewall and bootstrap peers.',
  },
  E_CONSENSUS: {
    message: 'The consensus engine did not leave its starting states in time, or the finalized height did not advance.',
    action: 'Check `curl -s http://127.0.0.1:8080/api/consensus/status` on the node and the other validators (`guts-upgrade-agent doctor`).',
  },
  E_SMOKE: { message: 'The operator smoke command failed.', action: 'Run the configured smoke command by hand and read its output in the result.' },
  E_METRICS_REGRESSION: {
    message: 'Error rate or latency rose past the configured limit.',
    action: "Compare the node's error rate and latency with its peers'; the agent rolled back.",
  },
  E_ROLLBACK_FAILED: {
    message: 'The automatic rollback did not bring the old version back healthy.',
    action: 'The node needs a person: run `guts-upgrade-agent doctor`, then `guts-upgrade-agent backup restore <id>` from the newest good backup.',
  },
  E_NOTHING_TO_ROLLBACK: {
    message: 'There is no completed upgrade with a backup to roll back.',
    action: 'There is no committed upgrade with a backup on this host; restore a backup by id if needed.',
  },
  E_INTERRUPTED: {
    message: 'The agent was interrupted mid-step and recovered on restart.',
    action: 'Nothing: the agent finished or undid the command after its restart; start it again if still wanted.',
  },
  E_INTERNAL: { message: 'An unexpected internal error.', action: "Report it with the agent's or coordinator's log around the time; retry once." },
  // Coordinator
  E_NOT_FOUND: { message: 'No such node or rollout.', httpStatus: 404, action: 'Check the id: `guts-upgrade nodes list`, `guts-upgrade rollout list`.' },
  E_CONFLICT: {
    message: 'Conflicts with an active rollout or existing resource.',
    httpStatus: 409,
    action: 'Another rollout is active or the resource exists: finish, abort or pause it first (`guts-upgrade rollout list`).',
  },
  E_INVALID_STATE: {
    message: 'The action is not valid in the current state.',
    httpStatus: 409,
    action: "The action does not fit the rollout's state: see `guts-upgrade rollout status <id>`.",
  },
  E_DISRUPTION_BUDGET: {
    message: 'Taking this node down could leave less voting weight than the quorum (or more than f nodes down where the chain set is unknown).',
    httpStatus: 400,
    action:
      "A validator heavier than the set's largest slack can only be upgraded with the `halt` strategy in a maintenance window; otherwise bring unhealthy validators back first (`guts-upgrade fleet`).",
  },
  E_BINDING_CHANGED: {
    message: 'A node claims a different chain validator than the one it is bound to.',
    httpStatus: 409,
    action:
      "Check `validatorPubkey` in that host's agent configuration; to really move the node to another validator, remove it (`guts-upgrade nodes remove <id>`) and add it again with `--pubkey`.",
  },
  E_BINDING_DUPLICATE: {
    message: 'The chain validator is already bound to another node.',
    httpStatus: 409,
    action: 'Two hosts claim one validator key: fix `validatorPubkey` on the wrong host (see `guts-upgrade fleet` for who holds which key).',
  },
  E_BINDING_UNKNOWN: {
    message: "The public key is not a validator of the chain's current set.",
    httpStatus: 400,
    action: "Check the key against the chain's validator set (`guts-upgrade fleet` lists it) and fix `validatorPubkey` or `--pubkey`.",
  },
  E_ROLE_MISMATCH: {
    message: "The agent's configured role (validator or follower) differs from the role the node was registered with.",
    httpStatus: 409,
    action:
      "Fix `role` in that host's agent configuration, or register the node again with the right role (`guts-upgrade nodes remove <id>`, then `guts-upgrade nodes add <id> --role follower`); the coordinator does not connect it until both agree.",
  },
  E_FOLLOWER_IS_VALIDATOR: {
    message: "A node registered as a follower is a validator by the chain's own evidence (its key is in the validator set, or it leads).",
    httpStatus: 409,
    action:
      'Nothing is upgraded outside the safety budget on the registration alone: check the node (`guts-upgrade fleet` names its validator), then register it again as a validator (`guts-upgrade nodes remove <id>`, `guts-upgrade nodes add <id>`) or fix the key given for it.',
  },
  E_CHAIN_UNCONFIRMED: {
    message: 'The reported validator set was not found or cannot be confirmed.',
    httpStatus: 409,
    action: 'Read the reported sets and their digests in `guts-upgrade fleet`, then confirm one with `guts-upgrade chain confirm <digest>`.',
  },
  E_ALREADY_AT_TARGET: {
    message: 'Every node of the rollout already runs the target version.',
    httpStatus: 409,
    action: 'Nothing to do, and no rollout was created: check the target version and the node list against `guts-upgrade fleet`.',
  },
  E_WINDOW_CLOSED: {
    message: 'No approved maintenance window is open.',
    action: 'Wait for the window (the plan shows its next opening) or choose another window.',
  },
  E_NOT_APPROVED: { message: 'The rollout needs approval before it can start.', action: 'Approve it: `guts-upgrade rollout approve <id>`.' },
  E_AGENT_LOST: {
    message: 'The agent stopped reporting mid-step.',
    action: 'Check the agent on that host (`systemctl status guts-upgrade-agent`) and its network to the coordinator.',
  },
  E_CANARY_FAILED: { message: 'The canary failed its soak checks.', action: "Read the soak verdict in the rollout's events; the canary was rolled back." },
  E_CANARY_UNJUDGED: {
    message: "The canary's soak judged nothing and the rollout requires a judged soak.",
    action:
      'Send traffic to the canary during the soak, lengthen it (--soak-ms) or lower canaryLimits.minRequests, then start the rollout again; the canary was rolled back.',
  },
  E_CHAIN_STALL: {
    message: 'The chain stopped finalizing.',
    action: "Check the validators' consensus (`guts-upgrade fleet`, `guts-upgrade-agent doctor` on each); consider `guts-upgrade rollout rollback <id>`.",
  },
  E_NODE_FAILED: {
    message: 'A node failed its upgrade.',
    action: "Read the node's failure in `guts-upgrade rollout status <id>`, then resume, abort or roll back.",
  },
} as const satisfies Record<string, ErrorCodeInfo>;

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_CODES, value);
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
