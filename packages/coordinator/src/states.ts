/**
 * The explicit state machines of the coordinator. Every state change of a
 * rollout or of a node's step goes through `transition*`, which refuses a move
 * the table does not list: a bug or a stale operator action then fails loudly
 * instead of corrupting a rollout.
 */
import { CodedError } from '@guts-upgrade/protocol';

export const ROLLOUT_STATES = [
  'planned',
  'scheduled',
  'awaiting_approval',
  'running',
  'soaking',
  'paused',
  'completed',
  'failed',
  'aborted',
  'rolling_back',
  'rolled_back',
] as const;
export type RolloutState = (typeof ROLLOUT_STATES)[number];

export const ROLLOUT_TRANSITIONS: Record<RolloutState, readonly RolloutState[]> = {
  planned: ['scheduled', 'awaiting_approval', 'running', 'aborted', 'failed'],
  scheduled: ['awaiting_approval', 'running', 'paused', 'aborted', 'failed'],
  awaiting_approval: ['scheduled', 'running', 'aborted', 'failed'],
  running: ['soaking', 'paused', 'completed', 'failed', 'aborted', 'rolling_back'],
  soaking: ['running', 'paused', 'failed', 'aborted', 'rolling_back'],
  // A paused rollout resumes into its gate: a window may have closed meanwhile.
  paused: ['running', 'scheduled', 'awaiting_approval', 'aborted', 'rolling_back', 'failed'],
  // Terminal states; a rollback of what was upgraded stays possible.
  completed: ['rolling_back'],
  failed: ['rolling_back'],
  aborted: ['rolling_back'],
  rolling_back: ['rolled_back', 'failed', 'paused'],
  rolled_back: [],
};

/** No more nodes are dispatched in these states (in-flight results are still recorded). */
export const TERMINAL_ROLLOUT_STATES: readonly RolloutState[] = ['completed', 'failed', 'aborted', 'rolled_back'];
/** States that hold nodes: a second rollout on any of them is a conflict. */
export const ACTIVE_ROLLOUT_STATES: readonly RolloutState[] = ROLLOUT_STATES.filter((s) => !TERMINAL_ROLLOUT_STATES.includes(s));

export const STEP_STATES = [
  'pending',
  'preparing',
  'prepared',
  'upgrading',
  'verifying',
  'upgraded',
  'failed',
  'rolling_back',
  'rolled_back',
  'skipped',
] as const;
export type StepState = (typeof STEP_STATES)[number];

export const STEP_TRANSITIONS: Record<StepState, readonly StepState[]> = {
  pending: ['preparing', 'upgrading', 'skipped'],
  preparing: ['prepared', 'failed'],
  prepared: ['upgrading', 'preparing'],
  upgrading: ['verifying', 'failed'],
  verifying: ['upgraded', 'failed', 'rolling_back'],
  // rolled_back directly: undone by hand on its host (it reports its old version again)
  upgraded: ['rolling_back', 'rolled_back'],
  // rolled back by its own agent already; a failed rollback can be retried
  failed: ['rolling_back'],
  rolling_back: ['rolled_back', 'failed'],
  rolled_back: [],
  skipped: [],
};

/** A node in these step states is (or may be) down because of us and counts against f. */
export const IN_FLIGHT_STEP_STATES: readonly StepState[] = ['upgrading', 'verifying', 'rolling_back'];

/**
 * The lifecycle of a command sent to an agent. A command row is written
 * 'pending' before it goes on the wire; the agent's answers move it on. Until
 * it has a result (an open state) it is re-sent with the same id on reconnect
 * and its node counts as in flight.
 *
 *   pending --sent--> sent --ack--> accepted | duplicate --result--> completed
 *      \________________\____________\__ack rejected__> rejected --late result--> completed
 */
export const COMMAND_STATES = ['pending', 'sent', 'accepted', 'duplicate', 'rejected', 'completed'] as const;
export type CommandState = (typeof COMMAND_STATES)[number];

export const COMMAND_TRANSITIONS: Record<CommandState, readonly CommandState[]> = {
  pending: ['sent', 'accepted', 'duplicate', 'rejected', 'completed'],
  // 'sent' is marked once; a re-send on reconnect keeps the state it has.
  sent: ['accepted', 'duplicate', 'rejected', 'completed'],
  // An agent acks a re-sent id again: accepted and duplicate are the same open state for every decision.
  accepted: ['accepted', 'duplicate', 'rejected', 'completed'],
  duplicate: ['accepted', 'duplicate', 'rejected', 'completed'],
  // The agent may still report a result for a command it rejected (hello.recentResults).
  rejected: ['completed'],
  completed: [],
};

/** Commands without a result yet: re-sent on reconnect, their node counts as in flight. */
export const COMMAND_OPEN_STATES: readonly CommandState[] = ['pending', 'sent', 'accepted', 'duplicate'];
/** The same, for the sequencer's per-step lookups (a tick asks it once per node). */
const OPEN_COMMAND_STATES: ReadonlySet<CommandState> = new Set(COMMAND_OPEN_STATES);

export function canCommandMove(from: CommandState, to: CommandState): boolean {
  return COMMAND_TRANSITIONS[from].includes(to);
}

/** A command in these states has its answer: a result, or a rejection. */
export function isCommandFinished(state: CommandState): boolean {
  return !OPEN_COMMAND_STATES.has(state);
}

/** The states a command may move to `to` from (a late informational write never undoes an answer). */
export function commandStatesInto(to: CommandState): CommandState[] {
  return COMMAND_STATES.filter((s) => COMMAND_TRANSITIONS[s].includes(to));
}

export function canTransitionRollout(from: RolloutState, to: RolloutState): boolean {
  return ROLLOUT_TRANSITIONS[from].includes(to);
}

export function assertRolloutTransition(from: RolloutState, to: RolloutState): void {
  if (!canTransitionRollout(from, to)) {
    throw new CodedError('E_INVALID_STATE', `a rollout cannot go from ${from} to ${to}`, { from, to });
  }
}

export function assertStepTransition(from: StepState, to: StepState): void {
  if (!STEP_TRANSITIONS[from].includes(to)) {
    throw new CodedError('E_INVALID_STATE', `a node step cannot go from ${from} to ${to}`, { from, to });
  }
}

/** Operator actions and the states they are valid in (the API answers 409 E_INVALID_STATE otherwise). */
export const ACTIONS = {
  pause: ['scheduled', 'running', 'soaking'],
  resume: ['paused'],
  abort: ['planned', 'scheduled', 'awaiting_approval', 'running', 'soaking', 'paused'],
  rollback: ['running', 'soaking', 'paused', 'completed', 'failed', 'aborted'],
  approve: ['awaiting_approval', 'scheduled', 'paused', 'running'],
} as const satisfies Record<string, readonly RolloutState[]>;
export type OperatorAction = keyof typeof ACTIONS;
