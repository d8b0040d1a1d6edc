/**
 * The chaos commands docs/simulation.md shows, run as written: one schedule over the real
 * processes (the full 50 run outside CI), and a bad argument refused.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

const documented = readFileSync(join(ROOT, 'docs', 'simulation.md'), 'utf8')
  .split('\n')
  .filter((l) => /^ {4}npm run chaos\b/.test(l))
  .map((l) => l.trim().replace(/\s+#.*$/, ''));

const run = (line: string) => spawnSync('sh', ['-c', line], { cwd: ROOT, encoding: 'utf8', timeout: 600_000 });

t.test('the documented chaos commands', async (t) => {
  t.same(documented, ['npm run chaos', 'npm run chaos -- --seed 2'], 'the doc shows the full run and one schedule');
  t.match(
    readFileSync(join(ROOT, 'package.json'), 'utf8'),
    /"chaos": "tsc -b && node test\/dist\/src\/chaos\/run.js"/,
    'npm run chaos runs the 50 schedules (outside CI: about 45 min)',
  );
  const one = run(`${documented[1]!.replace('npm run chaos', 'npm run --silent chaos')}`);
  t.equal(one.status, 0, `one schedule, no violation:\n${one.stdout}${one.stderr}`);
  t.match(one.stdout, /schedule 2: \S+.*lowest weight up \d+\/5 over \d+ samples.*0 violation\(s\)/);
  t.match(one.stdout, /chaos: 1 schedules \(2\.\.2\), 0 violating/);
});

t.test('a bad argument is refused with E_USAGE and exit code 2', async (t) => {
  const r = run('npm run --silent chaos -- --schedules many');
  t.equal(r.status, 2);
  t.match(r.stderr, /E_USAGE: --schedules must be a whole number, not "many"/);
  t.notMatch(r.stdout, /schedule \d+:/, 'nothing ran');
});
