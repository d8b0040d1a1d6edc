/**
 * `npm run bench -- --only drivers`, exactly as bench/README.md gives it: the
 * per-driver downtime bench on its own private dockerd, run to the end. What it
 * measures is not judged here (timings are never a pass/fail test); that it runs,
 * measures every driver and the blue-green switch, and cleans up, is. The bench
 * writes bench/results/latest.*: whatever was there before is put back.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { composeSkipReason } from '@guts-upgrade/agent/test/docker-lab';
import { NGINX } from '@guts-upgrade/agent/test/blue-green-lab';
import { npmRun, ROOT } from '../src/npm-run.js';

const RESULTS = ['latest.md', 'latest.json'].map((f) => path.join(ROOT, 'bench', 'results', f));
const skip = composeSkipReason() ?? (fs.existsSync(NGINX) ? false : `no ${NGINX}: apt-get install nginx-light`);

t.test('npm run bench -- --only drivers measures each driver and the blue-green switch', { skip }, async (t) => {
  const before = RESULTS.map((f) => (fs.existsSync(f) ? fs.readFileSync(f) : null));
  t.teardown(() =>
    RESULTS.forEach((f, i) => {
      const old = before[i];
      if (old) fs.writeFileSync(f, old);
      else fs.rmSync(f, { force: true });
    }),
  );
  const { code, out } = await npmRun(t, ['bench', '--', '--only', 'drivers']);
  t.equal(code, 0, 'exits 0');
  if (code !== 0) t.comment(out.slice(-4000));
  const report = JSON.parse(fs.readFileSync(RESULTS[1]!, 'utf8')) as {
    errors?: Record<string, string>;
    results: {
      drivers?: { rows: { driver: string; bare: { runsMs: number[] }; upgrade: { runsMs: number[] } }[]; blueGreen: { requests: number; failed: number } };
    };
  };
  t.same(report.errors ?? {}, {}, 'no bench step failed');
  const d = report.results.drivers;
  t.same(
    d?.rows.map((r) => r.driver),
    ['process', 'docker', 'compose'],
    'every driver measured',
  );
  for (const r of d?.rows ?? []) {
    t.equal(r.bare.runsMs.length, 3, `${r.driver}: three bare restarts`);
    t.equal(r.upgrade.runsMs.length, 3, `${r.driver}: three upgrades, each with the downtime the agent measured`);
    t.ok(
      r.upgrade.runsMs.every((ms) => Number.isFinite(ms) && ms > 0),
      `${r.driver}: the downtimes are figures`,
    );
  }
  t.ok((d?.blueGreen.requests ?? 0) > 0, 'the client loop sent requests through nginx');
  t.equal(typeof d?.blueGreen.failed, 'number', 'and counted the failed ones');
  t.match(fs.readFileSync(RESULTS[0]!, 'utf8'), /Per-node downtime per service driver/, 'the markdown report has the section');
});
