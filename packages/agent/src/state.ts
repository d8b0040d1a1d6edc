/**
 * The command state machine. Every transition is written to the journal
 * before the step's side effects start, so after a crash the last state says
 * exactly which side effects may be half done.
 *
 * | state     | next states                     | after a crash in this state (RECOVERY)                |
 * |-----------|---------------------------------|-------------------------------------------------------|
 * | received  | preflight, rollback, failed     | fail-untouched: discard partial work -> failed E_INTERRUPTED |
 * | preflight | fetch, failed                   | fail-untouched                                        |
 * | fetch     | backup, succeeded, failed       | fail-untouched (partial download: staging *.partial)  |
 * | backup    | stop, failed                    | fail-untouched (partial backup); node runs the old build |
 * | stop      | install, rollback               | roll-back: old binary still in place, start it        |
 * | install   | migrate, rollback               | roll-back: restore binary from guts-node.bak, start   |
 * | migrate   | start, rollback                 | roll-back: binary + data from backup                  |
 * | start     | verify, rollback                | roll-back (binary, + data when a migration ran)       |
 * | verify    | commit, rollback                | roll-back (binary, + data when a migration ran)       |
 * | commit    | succeeded                       | record-success: verify had passed -> succeeded        |
 * | rollback  | rolled_back, succeeded, failed  | roll-back again (every rollback action is idempotent) |
 * | succeeded, rolled_back, failed: terminal                                                      |
 *
 * Container hosts (docker and compose drivers) keep the same table: "binary"
 * is the container's image. In install the docker driver journals the
 * container's configuration before it removes the container, so roll-back
 * from install (even with no container left) recreates it on the previous
 * image id from the journal; the compose driver journals its previous
 * override file before writing the new one and puts it back.
 *
 * Blue-green upgrades of followers (blue-green/run.ts) pass backup -> install
 * -> start -> verify -> commit with their own meaning of each state and keep
 * their phase in the journaled context; their table is in that file.
 *
 * `prepare` runs received -> preflight -> fetch -> succeeded. A `rollback`
 * command runs received -> rollback -> succeeded | failed.
 */
export const STATES = [
  'received',
  'preflight',
  'fetch',
  'backup',
  'stop',
  'install',
  'migrate',
  'start',
  'verify',
  'commit',
  'rollback',
  'succeeded',
  'rolled_back',
  'failed',
] as const;
export type State = (typeof STATES)[number];

export const TRANSITIONS: Record<State, readonly State[]> = {
  received: ['preflight', 'rollback', 'failed'],
  preflight: ['fetch', 'failed'],
  fetch: ['backup', 'succeeded', 'failed'],
  // Blue-green (blue-green/run.ts) goes backup -> install -> start: the live container is never stopped, the new one migrates its copy itself.
  backup: ['stop', 'install', 'failed'],
  stop: ['install', 'rollback'],
  install: ['migrate', 'start', 'rollback'],
  migrate: ['start', 'rollback'],
  start: ['verify', 'rollback'],
  verify: ['commit', 'rollback'],
  commit: ['succeeded'],
  rollback: ['rolled_back', 'succeeded', 'failed'],
  succeeded: [],
  rolled_back: [],
  failed: [],
};

/**
 * What recovery does with a command interrupted in a state:
 * - fail-untouched: the node was never touched; discard partial work and end it failed (E_INTERRUPTED);
 * - roll-back: the node was touched; put the old version back (rolled_back, E_INTERRUPTED);
 * - record-success: verify had passed; record the success the crash cut short.
 */
export type Recovery = 'fail-untouched' | 'roll-back' | 'record-success';

export const RECOVERY: Record<Exclude<State, 'succeeded' | 'rolled_back' | 'failed'>, Recovery> = {
  received: 'fail-untouched',
  preflight: 'fail-untouched',
  fetch: 'fail-untouched',
  backup: 'fail-untouched',
  stop: 'roll-back',
  install: 'roll-back',
  migrate: 'roll-back',
  start: 'roll-back',
  verify: 'roll-back',
  commit: 'record-success',
  rollback: 'roll-back',
};

export function isTerminal(s: State): boolean {
  return TRANSITIONS[s].length === 0;
}

export function canTransition(from: State, to: State): boolean {
  return TRANSITIONS[from].includes(to);
}
