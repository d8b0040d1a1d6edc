#!/usr/bin/env node
/**
 * npm run sim -- --seeds N [--jobs J] [--from S] [--plant BUG]
 * npm run sim -- --seed S            exact replay of one seed, printing its whole event trace
 *
 * Seeds run in worker threads (one per job); each run is deterministic, so the
 * split does not change what a seed does. A failing seed prints the seed and
 * the tail of its trace; the exit code is 1 when any seed violated an invariant.
 */
import { availableParallelism } from 'node:os';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { makeTemplate, PLANTED_BUGS, simulate, type PlantedBug, type SimResult } from './world.js';

interface Job {
  seeds: number[];
  plant?: PlantedBug;
  dir: string;
  stopAtFirst: boolean;
}

interface Report {
  done: number;
  events: number;
  failures: { seed: number; violations: string[]; trace: string[] }[];
  outcomes: Record<string, number>;
}

export function scratchDir(): string {
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  return mkdtempSync(join(base, 'guts-sim-'));
}

/** Runs seeds in this thread. */
export function runSeeds(job: Job): Report {
  const template = makeTemplate(job.dir);
  const report: Report = { done: 0, events: 0, failures: [], outcomes: {} };
  for (const seed of job.seeds) {
    const r: SimResult = simulate({ seed, dir: job.dir, template, ...(job.plant ? { plant: job.plant } : {}) });
    report.done++;
    report.events += r.events;
    const key = r.outcome.replace(/:.*/, '');
    report.outcomes[key] = (report.outcomes[key] ?? 0) + 1;
    if (r.violations.length > 0) {
      report.failures.push({ seed, violations: r.violations, trace: r.trace.slice(-40) });
      if (job.stopAtFirst) break;
    }
  }
  rmSync(template, { force: true });
  return report;
}

/** Runs `seeds` over `jobs` worker threads. */
export async function runParallel(seeds: number[], jobs: number, plant?: PlantedBug, stopAtFirst = false): Promise<Report> {
  const dir = scratchDir();
  try {
    const parts: number[][] = Array.from({ length: jobs }, () => []);
    seeds.forEach((s, i) => {
      parts[i % jobs]?.push(s);
    });
    const reports = await Promise.all(
      parts
        .filter((p) => p.length > 0)
        .map(
          (p) =>
            new Promise<Report>((resolve, reject) => {
              const w = new Worker(new URL(import.meta.url), { workerData: { seeds: p, plant, dir, stopAtFirst } satisfies Job });
              w.once('message', resolve);
              w.once('error', reject);
            }),
        ),
    );
    const total: Report = { done: 0, events: 0, failures: [], outcomes: {} };
    for (const r of reports) {
      total.done += r.done;
      total.events += r.events;
      total.failures.push(...r.failures);
      for (const [k, v] of Object.entries(r.outcomes)) total.outcomes[k] = (total.outcomes[k] ?? 0) + v;
    }
    total.failures.sort((a, b) => a.seed - b.seed);
    return total;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const USAGE = 'usage: npm run sim -- [--seeds N] [--from S] [--jobs J] [--plant BUG] | --seed S [--plant BUG]';
const FLAGS = ['--seeds', '--from', '--jobs', '--seed', '--plant'];

/** The flags given, each with its value; anything else is an error (E_USAGE) and nothing runs. */
function parseArgs(argv: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i]!, argv[i + 1]];
    if (!FLAGS.includes(flag)) throw usage(`unknown argument ${flag}`);
    if (value === undefined || value.startsWith('--')) throw usage(`${flag} needs a value`);
    out.set(flag, value);
  }
  return out;
}

function usage(what: string): Error {
  return Object.assign(new Error(`E_USAGE: ${what}\n${USAGE}`), { code: 'E_USAGE' });
}

/** A whole number within [min, max], or E_USAGE naming the flag. */
function intArg(args: Map<string, string>, flag: string, fallback: number, min: number, max: number): number {
  const text = args.get(flag);
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) throw usage(`${flag} must be a whole number from ${min} to ${max}, not "${text}"`);
  return n;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const plantText = args.get('--plant');
  if (plantText !== undefined && !(PLANTED_BUGS as readonly string[]).includes(plantText)) {
    throw usage(`--plant must be one of ${PLANTED_BUGS.join(', ')}, not "${plantText}"`);
  }
  const plant = plantText as PlantedBug | undefined;
  if (args.has('--seed')) {
    if (args.has('--seeds') || args.has('--from') || args.has('--jobs')) throw usage('--seed replays one seed: it takes no --seeds, --from or --jobs');
    const seed = intArg(args, '--seed', 0, 0, Number.MAX_SAFE_INTEGER);
    const dir = scratchDir();
    try {
      const r = simulate({ seed, dir, fullTrace: true, ...(plant ? { plant } : {}) });
      for (const line of r.trace) console.log(line);
      console.log(`seed ${r.seed}: ${r.events} events, ${(r.virtualMs / 1000).toFixed(1)}s virtual, outcome ${r.outcome}`);
      if (r.violations.length > 0) {
        console.log(`seed ${r.seed} VIOLATED:\n  ${r.violations.join('\n  ')}`);
        process.exitCode = 1;
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    return;
  }
  const n = intArg(args, '--seeds', 1000, 1, 10_000_000);
  const from = intArg(args, '--from', 1, 0, Number.MAX_SAFE_INTEGER - n);
  const jobs = intArg(args, '--jobs', Math.min(2, availableParallelism()), 1, 256);
  const seeds = Array.from({ length: n }, (_, i) => from + i);
  const t0 = performance.now();
  const r = await runParallel(seeds, jobs, plant);
  const secs = (performance.now() - t0) / 1000;
  for (const f of r.failures.slice(0, 5)) {
    console.log(
      `\nseed ${f.seed} VIOLATED (replay: npm run sim -- --seed ${f.seed}${plant ? ` --plant ${plant}` : ''}):\n  ${f.violations.join('\n  ')}\n  last events:\n    ${f.trace.join('\n    ')}`,
    );
  }
  for (const f of r.failures.slice(5)) console.log(`seed ${f.seed} VIOLATED: ${f.violations[0]?.slice(0, 200)}`);
  const outcomes = Object.entries(r.outcomes)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  console.log(
    `sim: ${r.done} seeds (${from}..${from + n - 1}), ${r.failures.length} violating, ${r.events} events in ${secs.toFixed(1)}s on ${jobs} job(s): ` +
      `${(r.done / secs).toFixed(0)} seeds/s, ${(r.events / secs).toFixed(0)} events/s. Outcomes: ${outcomes}`,
  );
  if (r.failures.length > 0) process.exitCode = 1;
}

if (!isMainThread) {
  parentPort!.postMessage(runSeeds(workerData as Job));
} else if (process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/^.*\//, '/'))) {
  try {
    await main();
  } catch (err) {
    if ((err as { code?: string }).code !== 'E_USAGE') throw err;
    console.error((err as Error).message);
    process.exitCode = 2;
  }
}
