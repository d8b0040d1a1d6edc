#!/usr/bin/env node
/**
 * npm run chaos -- [--schedules N] [--from S] | --seed S
 *
 * The slow counterpart of npm run sim: random fault schedules over the real processes (a
 * coordinator daemon, real agents, simulated guts-nodes; 4 managed validators and 3 of other
 * operators, weight 1 each: quorum 5, largest slack 2). A seed draws the rollout (strategy, build,
 * auto-rollback, sometimes a lying agent) and 3 to 6 faults at random moments: an agent or the
 * coordinator killed with SIGKILL and started again, an agent frozen (SIGSTOP, the nearest thing to
 * a partition on loopback: its node runs on, its link goes silent), another operator's validator
 * stopped for a while (one at a time, so outside faults alone never exceed the slack), an operator
 * pausing and resuming. Wall-clock timing makes a seed a schedule, not an exact replay.
 *
 * The invariants are read from outside: the nodes' own readiness (weight up never below the
 * quorum), the coordinator's audit log (no node sent two upgrade commands, the leader never taken
 * down while another node waited, the log's last state is the rollout's state), every agent's
 * journal file (transitions only along the agent's own table, each command begun at most once),
 * and the end (the rollout finished or paused with a reason, every node ready on a known version).
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { api, type EventsBody, type RolloutDetailBody } from '@guts-upgrade/coordinator';
import { canTransition, type State } from '@guts-upgrade/agent';
import { waitFor } from '@guts-upgrade/simulator';
import { Rng, type FleetNode } from '@guts-upgrade/testkit';
import { makeRig, type Rig } from '../../integration/harness.js';
import { weightProbe } from '../../integration/probes.js';

const MANAGED = 4;
const UNMANAGED = 3;
const QUORUM = 5; // ceil(2/3 × 7)
const FAULT_WINDOW_MS = 30_000;
const SETTLE_MS = 240_000;

type Fault =
  | { at: number; kind: 'agent-kill'; node: number; downMs: number }
  | { at: number; kind: 'agent-freeze'; node: number; downMs: number }
  | { at: number; kind: 'coordinator-kill' }
  | { at: number; kind: 'unmanaged-down'; node: number; downMs: number }
  | { at: number; kind: 'pause-resume'; downMs: number };

interface Schedule {
  seed: number;
  strategy: 'rolling' | 'canary';
  build: 'good' | 'exits' | 'never-ready' | 'corrupts' | 'lies' | 'degrades';
  autoRollback: boolean;
  liar: boolean;
  faults: Fault[];
}

/** One seed's schedule: what the rollout is and which faults hit it when. */
export function drawSchedule(seed: number): Schedule {
  const r = new Rng(seed);
  const strategy = r.chance(0.3) ? 'canary' : 'rolling';
  const build = r.weighted([
    ['good', 10],
    ['exits', 1],
    ['never-ready', 1],
    ['corrupts', 1],
    ['lies', 1],
    ['degrades', 1],
  ] as const);
  const autoRollback = r.chance(0.5);
  const liar = r.chance(0.2);
  const faults: Fault[] = [];
  for (let i = r.int(3, 6); i > 0; i--) {
    const at = r.int(0, FAULT_WINDOW_MS);
    const kind = r.weighted([
      ['agent-kill', 4],
      ['agent-freeze', 2],
      ['coordinator-kill', 3],
      ['unmanaged-down', 2],
      ['pause-resume', 1],
    ] as const);
    if (kind === 'coordinator-kill') faults.push({ at, kind });
    else if (kind === 'pause-resume') faults.push({ at, kind, downMs: r.int(500, 4000) });
    else faults.push({ at, kind, node: r.int(0, (kind === 'unmanaged-down' ? UNMANAGED : MANAGED) - 1), downMs: r.int(500, 8000) });
  }
  faults.sort((a, b) => a.at - b.at);
  return { seed, strategy, build, autoRollback, liar, faults };
}

const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

/** The agent's pid, when it runs. */
function agentPid(n: FleetNode): number | null {
  const a = n.agent;
  return a && a.exitCode === null && a.signalCode === null ? (a.pid ?? null) : null;
}

/** Plays the faults in order; only one outside validator is down at a time. Returns what it did. */
async function playFaults(rig: Rig, s: Schedule, rolloutId: string, log: (line: string) => void): Promise<void> {
  const t0 = Date.now();
  let unmanagedDown: Promise<void> | null = null;
  const pending: Promise<void>[] = [];
  for (const f of s.faults) {
    await sleep(Math.max(0, t0 + f.at - Date.now()));
    const at = `${((Date.now() - t0) / 1000).toFixed(1)}s`;
    switch (f.kind) {
      case 'agent-kill': {
        const n = rig.fleet.nodes[f.node]!;
        if (!agentPid(n)) break;
        log(`${at} agent ${n.id} kill -9, back in ${f.downMs} ms`);
        await rig.fleet.stopAgent(n, 'SIGKILL');
        pending.push(sleep(f.downMs).then(() => rig.fleet.startAgent(n)));
        break;
      }
      case 'agent-freeze': {
        const n = rig.fleet.nodes[f.node]!;
        const pid = agentPid(n);
        if (!pid) break;
        log(`${at} agent ${n.id} frozen (SIGSTOP) for ${f.downMs} ms`);
        process.kill(pid, 'SIGSTOP');
        pending.push(
          sleep(f.downMs).then(() => {
            if (agentPid(n) === pid) process.kill(pid, 'SIGCONT');
          }),
        );
        break;
      }
      case 'coordinator-kill':
        log(`${at} coordinator kill -9 and restart`);
        await rig.crashAndRestart();
        break;
      case 'unmanaged-down': {
        if (unmanagedDown) break;
        const n = rig.fleet.unmanaged[f.node]!;
        log(`${at} ${n.id} (another operator's) down for ${f.downMs} ms`);
        await rig.fleet.stopNode(n, 'SIGKILL');
        unmanagedDown = sleep(f.downMs)
          .then(() => rig.fleet.startNode(n))
          .finally(() => {
            unmanagedDown = null;
          });
        pending.push(unmanagedDown);
        break;
      }
      case 'pause-resume': {
        const paused = await api(rig.op, 'POST', `/api/v1/rollouts/${rolloutId}/pause`, { reason: 'chaos operator' }).then(
          () => true,
          () => false, // not pausable in its state now: an operator would get 409 too
        );
        if (!paused) break;
        log(`${at} operator pause, resume in ${f.downMs} ms`);
        pending.push(
          sleep(f.downMs).then(() =>
            api(rig.op, 'POST', `/api/v1/rollouts/${rolloutId}/resume`, {}).then(
              () => undefined,
              () => undefined,
            ),
          ),
        );
        break;
      }
    }
  }
  await Promise.all(pending);
}

const SETTLED = ['completed', 'failed', 'aborted', 'rolled_back'];

/** The rollout once it has settled: ended, or paused for a reason other than our own pause. */
async function settled(rig: Rig, id: string): Promise<RolloutDetailBody | null> {
  return waitFor(
    async () => {
      const d = await api<RolloutDetailBody>(rig.op, 'GET', `/api/v1/rollouts/${id}`).catch(() => null);
      if (!d) return null;
      if (SETTLED.includes(d.rollout.state)) return d;
      if (d.rollout.state === 'paused' && d.rollout.code) return d;
      return null;
    },
    { what: `rollout ${id} settled`, timeoutMs: SETTLE_MS, intervalMs: 500 },
  ).catch(() => null);
}

/** Every agent journal: transitions only along the agent's table; each command begun at most once. */
function journalViolations(rig: Rig): string[] {
  const out: string[] = [];
  for (const n of rig.fleet.nodes) {
    if (!readdirSync(n.stateDir).includes('journal.sqlite')) continue;
    const db = new Database(join(n.stateDir, 'journal.sqlite'), { readonly: true });
    try {
      const rows = db.prepare('SELECT command_id, from_state, to_state FROM transitions ORDER BY seq').all() as {
        command_id: string;
        from_state: string | null;
        to_state: string;
      }[];
      const begun = new Map<string, number>();
      for (const r of rows) {
        if (r.from_state && r.from_state !== r.to_state && !canTransition(r.from_state as State, r.to_state as State)) {
          out.push(`${n.id}: command ${r.command_id} moved ${r.from_state} -> ${r.to_state}, not in the agent's table`);
        }
        if (r.to_state === 'preflight') begun.set(r.command_id, (begun.get(r.command_id) ?? 0) + 1);
      }
      for (const [id, k] of begun) if (k > 1) out.push(`${n.id}: command ${id} began ${k} times`);
    } finally {
      db.close();
    }
  }
  return out;
}

/** From the audit log: one upgrade command per node, the leader last, and the log agrees with the state. */
async function auditViolations(rig: Rig, d: RolloutDetailBody): Promise<string[]> {
  const out: string[] = [];
  const events = (await api<EventsBody>(rig.op, 'GET', `/api/v1/rollouts/${d.rollout.id}/events?after=0`)).events;
  const upgrades = new Map<string, Set<string>>();
  for (const e of events) {
    if (e.type !== 'node.dispatched' || e.data.command !== 'upgrade' || !e.nodeId) continue;
    const ids = upgrades.get(e.nodeId) ?? new Set<string>();
    ids.add(String(e.data.commandId));
    upgrades.set(e.nodeId, ids);
  }
  for (const [node, ids] of upgrades) if (ids.size > 1) out.push(`${node} was sent ${ids.size} upgrade commands: ${[...ids].join(', ')}`);
  const order = events.filter((e) => e.type === 'node.dispatched' && e.data.command === 'upgrade');
  order.forEach((e, i) => {
    const pendingOthers = d.steps.filter((s) => s.nodeId !== e.nodeId && !order.slice(0, i).some((o) => o.nodeId === s.nodeId)).length;
    if (e.data.leader === e.nodeId && pendingOthers > 0 && !(d.rollout.strategy === 'canary' && i === 0)) {
      out.push(`${e.nodeId} was taken down while leading, with ${pendingOthers} node(s) still to go`);
    }
  });
  const lastState = events.filter((e) => e.type === 'rollout.state').at(-1);
  if (lastState && lastState.data.to !== d.rollout.state) out.push(`the event log ends in ${String(lastState.data.to)}, the rollout is ${d.rollout.state}`);
  return out;
}

/** Every node ready again on a version the rollout knows, within a minute of the end. */
async function endViolations(rig: Rig): Promise<string[]> {
  const ok = await waitFor(
    async () => {
      for (const n of [...rig.fleet.nodes, ...rig.fleet.unmanaged]) {
        const ready = await fetch(`${n.apiUrl}/health/ready`, { signal: AbortSignal.timeout(3000) }).then(
          (r) => r.ok,
          () => false,
        );
        if (!ready) return null;
      }
      return true;
    },
    { what: 'every node ready', timeoutMs: 60_000, intervalMs: 500 },
  ).catch(() => null);
  return ok ? [] : ['not every node is ready a minute after the rollout settled'];
}

export interface ScheduleResult {
  seed: number;
  outcome: string;
  violations: string[];
  lowest: number;
  samples: number;
  ms: number;
  trace: string[];
}

export async function runSchedule(seed: number): Promise<ScheduleResult> {
  const s = drawSchedule(seed);
  const started = Date.now();
  const trace: string[] = [`schedule ${seed}: ${s.strategy}, build ${s.build}, autoRollback ${s.autoRollback}${s.liar ? ', a lying agent (v3)' : ''}`];
  const teardowns: (() => unknown)[] = [];
  const rig = await makeRig(
    { teardown: (fn) => teardowns.push(fn) },
    { n: MANAGED, child: true, chain: { unmanaged: UNMANAGED, ...(s.liar ? { liar: 'v3' } : {}) } },
  );
  try {
    await rig.waitFleetReady();
    const target = s.build === 'good' ? rig.fleet.artifact('1.1.0') : rig.fleet.artifact('1.1.0', s.build);
    const probe = weightProbe(rig);
    const created = await api<RolloutDetailBody>(rig.op, 'POST', '/api/v1/rollouts', {
      target,
      strategy: s.strategy,
      options: { autoRollback: s.autoRollback, maxUnavailable: 1, ...(s.strategy === 'canary' ? { canary: 'v1' } : {}) },
    });
    const id = created.rollout.id;
    await playFaults(rig, s, id, (l) => trace.push(l));
    const d = await settled(rig, id);
    const { lowest, lowestDown, samples } = await probe.stop();
    const violations: string[] = [];
    if (lowest < QUORUM) violations.push(`weight up fell to ${lowest} < quorum ${QUORUM} (${lowestDown.join(', ')} down)`);
    if (!d) violations.push(`the rollout did not finish nor pause with a reason within ${SETTLE_MS / 1000} s of the last fault`);
    const final = d ?? (await api<RolloutDetailBody>(rig.op, 'GET', `/api/v1/rollouts/${id}`));
    violations.push(...(await auditViolations(rig, final)), ...journalViolations(rig), ...(await endViolations(rig)));
    return {
      seed,
      outcome: `${final.rollout.state}${final.rollout.code ? ` ${final.rollout.code}` : ''}`,
      violations,
      lowest,
      samples,
      ms: Date.now() - started,
      trace,
    };
  } finally {
    for (const fn of teardowns.reverse()) await fn();
  }
}

function intArg(flag: string, fallback: number): number {
  const i = process.argv.indexOf(flag);
  if (i < 0) return fallback;
  const text = process.argv[i + 1] ?? '';
  if (!/^\d+$/.test(text)) {
    console.error(`E_USAGE: ${flag} must be a whole number, not "${text}"\nusage: npm run chaos -- [--schedules N] [--from S] | --seed S`);
    process.exit(2);
  }
  return Number(text);
}

async function main(): Promise<void> {
  for (const a of process.argv.slice(2)) {
    if (a.startsWith('--') && !['--schedules', '--from', '--seed'].includes(a)) {
      console.error(`E_USAGE: unknown argument ${a}\nusage: npm run chaos -- [--schedules N] [--from S] | --seed S`);
      process.exit(2);
    }
  }
  const one = process.argv.includes('--seed') ? intArg('--seed', 1) : null;
  const from = one ?? intArg('--from', 1);
  const count = one != null ? 1 : intArg('--schedules', 50);
  const t0 = Date.now();
  const results: ScheduleResult[] = [];
  for (let seed = from; seed < from + count; seed++) {
    const r = await runSchedule(seed);
    results.push(r);
    console.log(
      `schedule ${seed}: ${r.outcome}, lowest weight up ${r.lowest}/${QUORUM} over ${r.samples} samples, ${(r.ms / 1000).toFixed(0)} s, ${r.violations.length} violation(s)`,
    );
    if (r.violations.length > 0 || one != null) console.log(`  ${[...r.trace, ...r.violations.map((v) => `VIOLATION ${v}`)].join('\n  ')}`);
  }
  const bad = results.filter((r) => r.violations.length > 0);
  const outcomes = new Map<string, number>();
  for (const r of results) outcomes.set(r.outcome, (outcomes.get(r.outcome) ?? 0) + 1);
  console.log(
    `chaos: ${results.length} schedules (${from}..${from + count - 1}), ${bad.length} violating, ${((Date.now() - t0) / 60_000).toFixed(1)} min; ` +
      `lowest weight up ${Math.min(...results.map((r) => r.lowest))} (quorum ${QUORUM}); outcomes: ${[...outcomes].map(([k, v]) => `${k} ${v}`).join(', ')}`,
  );
  if (bad.length > 0) process.exitCode = 1;
}

await main();
