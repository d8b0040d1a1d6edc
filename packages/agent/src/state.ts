/**
 * The command state machine. Every transition is written to the journal
 * before the step's side effects start, so after a crash the last state says
 * exactly which side effects may be half done.
 *
 * | state     | next states                     | after a crash in this state (RECOVERY)                |
 * |-----------|---------------------------------|-------------------------------------------------------|
 * | received  | preflight, rollback, failed     | discard: node untouched -> failed E_INTERRUPTED        |
 * | preflight | fetch, failed                   | discard                                               |
 * | fetch     | backup, succeeded, failed       | discard partial download (staging *.partial)          |
 * | backup    | stop, failed                    | discard partial backup; node still runs the old build |
 * | stop      | install, rollback               | rollback: old binary still in place, start it         |
 * | install   | migrate, rollback               | rollback: restore binary from guts-node.bak, start    |
 * | migrate   | start, rollback                 | rollback: binary + data from backup                   |
 * | start     | verify, rollback                | rollback (binary, + data when a migration ran)        |
 * | verify    | commit, rollback                | rollback (binary, + data when a migration ran)        |
 * | commit    | succeeded                       | finish: verify had passed -> succeeded                |
 * | rollback  | rolled_back, succeeded, failed  | rollback again (every rollback action is idempotent)  |
 * | succeeded, rolled_back, failed: terminal                                                      |
 *
 * `prepare` runs received -> preflight -> fetch -> succeeded. A `rollback`
 * command runs received -> rollback -> succeeded | failed.
 */
export const STATES = [
  'received', 'preflight', 'fetch', 'backup', 'stop', 'install', 'migrate', 'start', 'verify', 'commit', 'rollback',
  'succeeded', 'rolled_back', 'failed',
] as const;
export type State = (typeof STATES)[number];

export const TRANSITIONS: Record<State, readonly State[]> = {
  received: ['preflight', 'rollback', 'failed'],
  preflight: ['fetch', 'failed'],
  fetch: ['backup', 'succeeded', 'failed'],
  backup: ['stop', 'failed'],
  stop: ['install', 'rollback'],
  install: ['migrate', 'rollback'],
  migrate: ['start', 'rollback'],
  start: ['verify', 'rollback'],
  verify: ['commit', 'rollback'],
  commit: ['succeeded'],
  rollback: ['rolled_back', 'succeeded', 'failed'],
  succeeded: [],
  rolled_back: [],
  failed: [],
};

export type Recovery = 'discard' | 'rollback' | 'finish-commit';

export const RECOVERY: Record<Exclude<State, 'succeeded' | 'rolled_back' | 'failed'>, Recovery> = {
  received: 'discard',
  preflight: 'discard',
  fetch: 'discard',
  backup: 'discard',
  stop: 'rollback',
  install: 'rollback',
  migrate: 'rollback',
  start: 'rollback',
  verify: 'rollback',
  commit: 'finish-commit',
  rollback: 'rollback',
};

export function isTerminal(s: State): boolean {
  return TRANSITIONS[s].length === 0;
}

export function canTransition(from: State, to: State): boolean {
  return TRANSITIONS[from].includes(to);
}
