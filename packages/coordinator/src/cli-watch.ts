/**
 * `guts-upgrade rollout watch`: follows a rollout until it ends or pauses for a person.
 *
 * Three outputs for three readers:
 *  - a terminal: one frame redrawn in place (each node's step and progress, the soak's
 *    countdown, the weight slack left, the latest events), coloured unless NO_COLOR is set
 *    or TERM is dumb;
 *  - a pipe or a log file: one line per event, never a control character;
 *  - --json: NDJSON, one line per event and one per change of the rollout.
 */
import type { FailureEvidence } from '@guts-upgrade/protocol';
import { api, type ApiTarget, type EventsBody, type FleetBody, type RolloutDetailBody } from './client.js';
import { EXIT, FINAL_BAD, FINAL_OK, pausedAdvice, renderFailure, renderRollout, soakLine, type SoakData } from './cli-render.js';
import type { EventRow } from './db.js';
import { IN_FLIGHT_STEP_STATES, type StepState } from './states.js';

export interface WatchIo {
  env: NodeJS.ProcessEnv;
  out(s: string): void;
  /** Whether standard output is a terminal (the frame is redrawn in place only there). */
  isTTY?: boolean;
}

/** Colour only for a person at a terminal who did not say NO_COLOR (https://no-color.org). */
export function colourAllowed(env: NodeJS.ProcessEnv, isTTY: boolean | undefined): boolean {
  return !!isTTY && !env.NO_COLOR && env.TERM !== 'dumb';
}

/** One event as a log line; null for the ones a person need not see. */
export function eventLine(e: EventRow): string | null {
  const at = e.at.slice(11, 23);
  const d = e.data as Record<string, unknown> & { evidence?: FailureEvidence };
  switch (e.type) {
    case 'command.sent':
      return null;
    case 'node.progress':
      return `${at}   ${e.nodeId} ${d.step} ${d.state}${d.message ? `: ${d.message}` : ''}`;
    case 'rollout.waiting':
      return `${at} waiting: ${d.reason}`;
    case 'node.agent_lost':
      return `${at} node.agent_lost ${e.nodeId ?? ''} E_AGENT_LOST: ${d.message}`;
    case 'canary.passed':
      return `${at} ${soakLine(e.nodeId, d as SoakData)}`;
    case 'node.failed':
      if (d.evidence?.check) return `${at} node.failed ${e.nodeId ?? ''} ${d.code ?? ''}: check ${d.evidence.check.name}: ${d.evidence.check.detail}`;
      return `${at} node.failed ${e.nodeId ?? ''} ${d.code ?? ''}`;
    case 'rollout.state':
      return `${at} rollout ${d.from} -> ${d.to}${d.code ? ` ${d.code}` : ''}${d.reason ? `: ${d.reason}` : ''}`;
    default:
      return `${at} ${e.type} ${e.nodeId ?? ''} ${d.code ?? ''}`.trimEnd();
  }
}

const SGR = { reset: '\x1b[0m', bold: '\x1b[1m', dim: '\x1b[2m', red: '\x1b[31m', green: '\x1b[32m', yellow: '\x1b[33m', cyan: '\x1b[36m' };
const STEP_COLOUR: Partial<Record<StepState, string>> = { upgraded: SGR.green, failed: SGR.red, rolled_back: SGR.yellow, skipped: SGR.dim };
const ROLLOUT_COLOUR: Record<string, string> = { completed: SGR.green, failed: SGR.red, rolled_back: SGR.red, aborted: SGR.yellow, paused: SGR.yellow };

export interface WatchFrame {
  detail: RolloutDetailBody;
  /** The fleet watch, for the weight slack; null when it could not be read. */
  fleet: FleetBody | null;
  /** The latest event lines, oldest first. */
  recent: string[];
  now: number;
  colour: boolean;
}

/** The terminal frame: a pure function of what the API said, so it is tested as text. */
export function renderWatchFrame(f: WatchFrame): string {
  const paint = (text: string, code: string | undefined) => (f.colour && code ? `${code}${text}${SGR.reset}` : text);
  const { rollout: r, steps } = f.detail;
  const lines = [
    `${paint(`rollout ${r.id}`, SGR.bold)}  ${r.strategy}  ${r.fromVersion ?? '?'} -> ${r.target.version}  ${paint(r.state, ROLLOUT_COLOUR[r.state])}${r.code ? `  ${paint(r.code, SGR.red)}` : ''}`,
  ];
  if (r.reason) lines.push(`  reason: ${r.reason}`);
  if (r.data.waiting) lines.push(`  waiting: ${r.data.waiting}`);
  if (r.state === 'soaking' && r.data.soakStartedAt != null) {
    const left = Math.max(0, r.data.soakStartedAt + r.options.soakMs - f.now);
    lines.push(`  soak: ${Math.ceil(left / 1000)} s left of ${Math.round(r.options.soakMs / 1000)} s on ${r.options.canary ?? '?'}`);
  }
  const chain = f.fleet?.chain;
  if (chain) {
    const after = chain.slackAfterInFlight != null ? `, ${chain.slackAfterInFlight} after the nodes in flight` : '';
    lines.push(`  slack: ${chain.slack} weight above quorum ${chain.quorumWeight} of ${chain.totalWeight}${after}`);
  } else if (f.fleet) lines.push(`  budget: ${f.fleet.disruptionBudget} more node(s) may go down (n=${f.fleet.n}, f=${f.fleet.f})`);
  lines.push(`  ${'node'.padEnd(15)} ${'step'.padEnd(13)} ${'progress'.padEnd(28)} ${'downtime'.padStart(8)}  code`);
  for (const s of steps) {
    const inFlight = IN_FLIGHT_STEP_STATES.includes(s.state) || s.state === 'preparing';
    const agent = s.agent && s.agent !== 'connected' ? ` (agent ${s.agent})` : '';
    lines.push(
      `  ${s.nodeId.padEnd(15)} ${paint(s.state.padEnd(13), inFlight ? SGR.cyan : STEP_COLOUR[s.state])} ${`${s.progress ?? ''}${agent}`.slice(0, 28).padEnd(28)} ${(s.downtimeMs != null ? `${Math.round(s.downtimeMs)}ms` : '-').padStart(8)}  ${s.code ? paint(s.code, SGR.red) : ''}`,
    );
  }
  for (const s of steps) {
    if (s.state === 'failed' && s.evidence?.check) lines.push(`  ${s.nodeId}: check ${s.evidence.check.name}: ${s.evidence.check.detail}`);
  }
  if (f.recent.length) lines.push('  latest:', ...f.recent.map((l) => `    ${l}`));
  return lines.join('\n');
}

/** Moves the cursor back over the last frame and clears it (CSI n F: up n lines to column 1; CSI J: clear below). */
function overwrite(previousLines: number): string {
  return previousLines > 0 ? `\x1b[${previousLines}F\x1b[J` : '';
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Follows a rollout; returns the exit code (0 completed, 1 failed/aborted/rolled back, 5 paused). */
export async function watch(t: ApiTarget, id: string, json: boolean, io: WatchIo): Promise<number> {
  const live = !json && !!io.isTTY;
  const colour = colourAllowed(io.env, io.isTTY);
  const recent: string[] = [];
  let after = 0;
  let last = '';
  let drawn = 0;
  for (;;) {
    const r = await api<RolloutDetailBody>(t, 'GET', `/api/v1/rollouts/${id}`);
    const ev = await api<EventsBody>(t, 'GET', `/api/v1/rollouts/${id}/events?after=${after}`);
    for (const e of ev.events) {
      after = e.seq;
      if (json) {
        io.out(`${JSON.stringify({ event: e })}\n`);
        continue;
      }
      const line = eventLine(e);
      if (line === null) continue;
      if (live) recent.push(line);
      else io.out(`${line}\n`);
    }
    recent.splice(0, Math.max(0, recent.length - 8));
    const text = renderRollout(r);
    if (json && text !== last) io.out(`${JSON.stringify({ rollout: r.rollout, steps: r.steps })}\n`);
    last = text;
    if (live) {
      const fleet = await api<FleetBody>(t, 'GET', '/api/v1/fleet').catch(() => null);
      const frame = renderWatchFrame({ detail: r, fleet, recent, now: Date.now(), colour });
      io.out(`${overwrite(drawn)}${frame}\n`);
      drawn = frame.split('\n').length;
    }
    const state: string = r.rollout.state;
    if (FINAL_OK.includes(state) || FINAL_BAD.includes(state)) {
      // A log gets the full status; the terminal's frame shows the end already, and below it
      // each failed node's evidence in full (its log lines).
      const failures = r.steps.filter((s) => s.state === 'failed' && s.code).flatMap((s) => renderFailure(s));
      if (!json) io.out(live ? (failures.length ? `${failures.join('\n')}\n` : '') : `${text}\n`);
      return FINAL_OK.includes(state) ? EXIT.OK : EXIT.ROLLOUT_FAILED;
    }
    if (state === 'paused') {
      // A paused rollout waits for a person: say so and hand the terminal back instead of polling forever.
      if (!json) io.out(`${live ? '' : `${text}\n`}${pausedAdvice(r.rollout.id, r.rollout.reason ?? null)}\n`);
      return EXIT.PAUSED;
    }
    await sleep(Number(io.env.GUTS_UPGRADE_WATCH_MS ?? 500));
  }
}
