/**
 * What the operator CLI prints for a rollout, a plan and a pause (plain text
 * functions of the API's answers) and the codes it exits with, shared by the
 * commands and by watch.
 */
import type { RolloutDetailBody } from './client.js';
import type { Plan } from './planner.js';

/** Exit codes (also in the header of cli.ts and in docs/operating.md). */
export const EXIT = { OK: 0, ROLLOUT_FAILED: 1, USAGE: 2, API: 3, UNREACHABLE: 4, PAUSED: 5 } as const;

export const FINAL_OK = ['completed'];
export const FINAL_BAD = ['failed', 'aborted', 'rolled_back'];

export function fmtTime(ms: number | null): string {
  return ms == null ? '-' : new Date(ms).toISOString().slice(11, 19);
}

export function renderRollout(d: RolloutDetailBody): string {
  const r = d.rollout;
  const lines = [
    `rollout ${r.id}  ${r.strategy}  ${r.fromVersion ?? '?'} -> ${r.target.version}  state=${r.state}${r.code ? `  code=${r.code}` : ''}`,
    ...(r.reason ? [`  reason: ${r.reason}`] : []),
    `  waves: ${r.waves.map((w: string[]) => `[${w.join(' ')}]`).join(' ')}`,
    '  node            step          progress              downtime  started   code',
  ];
  for (const s of d.steps) {
    lines.push(
      `  ${s.nodeId.padEnd(15)} ${s.state.padEnd(13)} ${(s.progress ?? '').padEnd(21)} ${(s.downtimeMs != null ? `${Math.round(s.downtimeMs)}ms` : '-').padStart(8)}  ${fmtTime(s.startedAt).padEnd(8)}  ${s.code ?? ''}`,
    );
  }
  for (const s of d.steps) if (s.code && s.state === 'failed') lines.push(...renderFailure(s));
  return lines.join('\n');
}

/** A failed node's evidence under the table: what failed, the check that decided it, the node's own last words. */
export function renderFailure(s: Pick<RolloutDetailBody['steps'][number], 'nodeId' | 'code' | 'message' | 'evidence'>): string[] {
  // A message often starts with its own code already; say it once.
  const message = s.message?.startsWith(`${s.code}: `) ? s.message.slice(`${s.code}: `.length) : s.message;
  const out = [`  ${s.nodeId} failed ${s.code}${message ? `: ${message}` : ''}`];
  const ev = s.evidence;
  if (ev?.check) {
    const extra = [ev.check.last !== undefined ? `last ${ev.check.last}` : '', ev.check.waitedMs !== undefined ? `waited ${ev.check.waitedMs} ms` : ''].filter(
      Boolean,
    );
    out.push(`    check ${ev.check.name}: ${ev.check.detail}${extra.length ? ` (${extra.join(', ')})` : ''}`);
  }
  if (ev?.nodeLog.length) {
    out.push(`    node log, last ${ev.nodeLog.length} line${ev.nodeLog.length === 1 ? '' : 's'}:`);
    for (const l of ev.nodeLog) out.push(`      | ${l}`);
  } else out.push('    node log: none sent (an agent older than protocol 1.3, or the node wrote nothing)');
  return out;
}

/** Where the agents will get the binary: the dry run shows it, so an operator sees what the commands will carry. */
function artifactLine(t: Plan['target']): string {
  return t.url
    ? `  artifact: ${t.url} sha256 ${t.sha256} (for agents with allowUnsigned: true)`
    : `  artifact: signed release (each agent resolves ${t.version} through its release repository)`;
}

export function renderPlan(p: Plan): string {
  return [
    `plan ${p.strategy}: ${p.fromVersion ?? '?'} -> ${p.target.version} (${p.path?.kind ?? 'n/a'}) n=${p.n} f=${p.f} maxUnavailable=${p.maxUnavailable}`,
    artifactLine(p.target),
    ...p.waves.map(
      (w: string[], i: number) =>
        `  wave ${i + 1}: ${w.join(', ')}${p.chain ? `  (weight ${p.chain.waveWeights[i]} down, slack left ${p.chain.slackLeft[i]})` : ''}`,
    ),
    ...(p.chain
      ? [
          `  chain: epoch ${p.chain.epoch}, total weight ${p.chain.totalWeight}, quorum ${p.chain.quorumWeight}, largest slack ${p.chain.largestSlack}, slack proven now ${p.chain.slackNow}`,
        ]
      : []),
    ...(p.skip.length ? [`  skip (already on target): ${p.skip.join(', ')}`] : []),
    ...(p.requiresApproval ? ['  requires approval'] : []),
    ...(p.window ? [`  window ${p.window.name}: ${p.window.open ? 'open' : `closed, next ${p.window.nextOpening}`}`] : []),
    ...p.warnings.map((w: string) => `  warning: ${w}`),
  ].join('\n');
}

/** A passed soak, saying plainly when its metrics judged nothing. */
export type SoakData = { metrics?: { judged?: boolean; detail?: string } };
export function soakLine(nodeId: string | null, data: SoakData): string {
  const m = data.metrics;
  return m?.judged === false
    ? `canary ${nodeId ?? ''} passed its soak, but its metrics judged nothing: ${m.detail ?? 'no detail'}`
    : `canary ${nodeId ?? ''} passed its soak${m?.detail ? `: ${m.detail}` : ''}`;
}

/** What an operator can do about a paused rollout, as commands to copy. */
export function pausedAdvice(id: string, reason: string | null): string {
  return [
    `rollout ${id} is paused${reason ? `: ${reason}` : ''}`,
    'it waits for an operator; next, one of:',
    `  guts-upgrade rollout resume ${id}      # continue where it stopped`,
    `  guts-upgrade rollout abort ${id}       # stop here; upgraded nodes stay upgraded`,
    `  guts-upgrade rollout rollback ${id}    # return every upgraded node to its previous version`,
  ].join('\n');
}
