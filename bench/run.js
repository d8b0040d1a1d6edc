/**
 * npm run bench [-- --only makespan,downtime] [--quick] [--serial-max-n N] [--sizes-gb 1,10] [--drivers-data-mb 1024]
 *
 * Runs the benchmarks, each comparing side by side within one run (ratios,
 * since the machine is noisy); no figure is a pass/fail test. Writes
 * bench/results/latest.md and bench/results/latest.json (git-ignored).
 * Everything started is stopped and every temp dir removed, also on error.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT, cleanupAll, installCleanupHooks } from './lib/common.js';
import { renderMarkdown } from './lib/report.js';
import { makespanBench } from './makespan.js';
import { scaleBench } from './scale.js';
import { dataBench } from './data.js';
import { footprintBench } from './footprint.js';
import { warmupBench } from './warmup.js';
import { driversBench } from './drivers.js';

const ALL = ['makespan', 'downtime', 'scale', 'footprint', 'throughput', 'warmup', 'drivers'];

function parseArgs(argv) {
  const o = { only: ALL, quick: false, opts: {} };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [k, inline] = a.split('=', 2);
    const val = () => inline ?? argv[++i];
    if (k === '--quick') o.quick = true;
    else if (k === '--only') {
      o.only = val()
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
      for (const b of o.only) if (!ALL.includes(b)) throw new Error(`--only: unknown bench ${b} (expected ${ALL.join(', ')})`);
    } else if (k === '--serial-max-n') o.opts.serialMaxN = Number(val());
    else if (k === '--sizes') o.opts.sizes = val().split(',').map(Number);
    else if (k === '--sizes-gb') o.opts.sizesGb = val().split(',').map(Number);
    else if (k === '--restart-runs') o.opts.restartRuns = Number(val());
    else if (k === '--weighted-sizes') o.opts.weightedSizes = val().split(',').filter(Boolean).map(Number);
    else if (k === '--weighted-seeds') o.opts.weightedSeeds = val().split(',').filter(Boolean).map(Number);
    else if (k === '--agents') o.opts.agents = Number(val());
    else if (k === '--drivers-data-mb') o.opts.driversDataMb = Number(val());
    else if (k === '--scale-rounds') {
      const n = Number(val());
      if (!Number.isInteger(n) || n < 1 || n > 20) throw new Error(`--scale-rounds: expected a whole number from 1 to 20, got ${inline ?? argv[i]}`);
      o.opts.scaleRounds = n;
    } else if (k === '--help' || k === '-h') {
      process.stdout.write(
        `usage: npm run bench -- [--only ${ALL.join(',')}] [--quick] [--serial-max-n N] [--sizes 4,7,31,100] [--weighted-sizes 7,13,20,31,100] [--weighted-seeds 1,2,3] [--sizes-gb 1,10] [--restart-runs 3] [--agents 2000] [--scale-rounds 3] [--drivers-data-mb 1024]\n`,
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  installCleanupHooks();
  const t0 = Date.now();
  const log = (m) => process.stderr.write(`[bench ${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}\n`);
  const results = {};
  const errors = {};
  const ctx = { quick: args.quick, log, opts: args.opts };
  const want = (b) => args.only.includes(b);
  const step = async (name, fn) => {
    try {
      results[name] = await fn();
    } catch (err) {
      errors[name] = err.stack ?? String(err);
      log(`${name} FAILED: ${err.message}`);
    } finally {
      await cleanupAll();
    }
  };
  try {
    if (want('makespan')) await step('makespan', () => makespanBench(ctx));
    if (want('scale')) await step('scale', () => scaleBench(ctx));
    if (want('footprint')) await step('footprint', () => footprintBench(ctx));
    if (want('warmup')) await step('warmup', () => warmupBench(ctx));
    if (want('drivers')) await step('drivers', () => driversBench(ctx));
    // downtime, the backup's peak RSS and throughput share the big data dirs (generated once per size).
    if (want('downtime') || want('throughput') || want('footprint')) {
      await step('data', () => dataBench({ ...ctx, downtime: want('downtime'), throughput: want('throughput'), peakRss: want('footprint') }));
      const d = results.data;
      delete results.data;
      if (d) {
        if (want('downtime')) results.downtime = d.downtime;
        if (want('throughput')) results.throughput = d.throughput;
        if (want('footprint') && results.footprint) results.footprint.backupPeak = d.peakRss;
      }
    }
  } finally {
    await cleanupAll();
  }
  const out = {
    startedAt: new Date(t0).toISOString(),
    durationSec: Math.round((Date.now() - t0) / 1000),
    mode: args.quick ? 'quick' : 'full',
    only: args.only,
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      memGiB: Math.round(os.totalmem() / 1024 ** 3),
      node: process.version,
      loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100),
    },
    results,
    errors,
  };
  const dir = path.join(ROOT, 'bench/results');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'latest.json'), `${JSON.stringify(out, null, 2)}\n`);
  const md = renderMarkdown(out);
  fs.writeFileSync(path.join(dir, 'latest.md'), md);
  process.stdout.write(md);
  log(`wrote bench/results/latest.md and latest.json`);
  process.exitCode = Object.keys(errors).length ? 1 : 0;
}

main().catch(async (err) => {
  process.stderr.write(`${err.stack ?? err}\n`);
  await cleanupAll();
  process.exit(2);
});
