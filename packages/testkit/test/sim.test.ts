/**
 * The simulation bites: each planted bug (wrapping decide()'s actions or the transport, in
 * the harness, never in product code) is found within a few seeds of the CI range, by the
 * invariant it breaks, on a seed the unplanted coordinator passes. And a seed replays exactly.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { scratchDir } from '../src/sim/cli.js';
import { simulate, type PlantedBug } from '../src/sim/world.js';

const dir = scratchDir();
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const norm = (trace: string[]) => trace.map((l) => l.replace(/\br[0-9a-z]{7,}(?=\.v\d)/g, 'R'));

t.test('one seed gives one exact run', async (t) => {
  const a = simulate({ seed: 3, dir, fullTrace: true });
  const b = simulate({ seed: 3, dir, fullTrace: true });
  t.equal(a.events, b.events);
  t.same(norm(a.trace), norm(b.trace));
  t.ok(a.trace.length > 10, 'the trace says what happened');
});

const planted: [PlantedBug, RegExp][] = [
  ['budget-off-by-one', /weight down \d+ exceeds what the chain tolerates/],
  ['leader-not-excluded', /the leader \S+ was taken down while/],
  ['resend-new-id', /was sent \d+ upgrade commands in one rollout/],
];

for (const [plant, expected] of planted) {
  t.test(`planted bug ${plant} is found`, async (t) => {
    let found: number | null = null;
    let tried = 0;
    for (let seed = 1; seed <= 500 && found == null; seed++) {
      tried++;
      const r = simulate({ seed, dir, plant });
      if (!r.violations.some((v) => expected.test(v))) continue;
      // The same schedule without the planted bug passes: the bug, not the schedule, broke it.
      if (simulate({ seed, dir }).violations.length === 0) found = seed;
    }
    t.ok(found != null, `found within ${tried} seeds (first at seed ${found})`);
    t.comment(`${plant}: first found at seed ${found} after ${tried} seed(s)`);
  });
}

// ---------------------------------------------------------------- the CLI, as docs/simulation.md writes it

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');

function run(line: string): { code: number | null; out: string } {
  const r = spawnSync('sh', ['-c', line], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

/** The `npm run sim` lines of the doc's code block, without their trailing comments. */
function documented(): string[] {
  return readFileSync(join(ROOT, 'docs', 'simulation.md'), 'utf8')
    .split('\n')
    .filter((l) => /^ {4}npm run sim\b/.test(l))
    .map((l) => l.trim().replace(/\s+#.*$/, ''));
}

t.test('every documented sim command runs as written', async (t) => {
  const lines = documented();
  t.ok(lines.length >= 4, `the doc shows ${lines.length} commands`);
  const scripts = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).scripts as Record<string, string>;
  t.ok(
    lines.some((l) => `${scripts.sim} ${l.replace(/^npm run sim -- /, '')}` === scripts['test:sim']),
    `the doc shows what npm test runs (${scripts['test:sim']})`,
  );
  for (const line of lines) {
    const args = line.replace(/^npm run sim -- /, '');
    if (`${scripts.sim} ${args}` === scripts['test:sim']) {
      // The CI run itself: npm test runs exactly these arguments (test:sim), so it is not run twice here.
      t.ok(Number(/--seeds (\d+)/.exec(args)?.[1]) >= 10_000, `${line}: npm test runs it (test:sim), at least 10,000 seeds`);
      t.match(scripts.test, /npm run --silent test:sim/, 'and npm test calls test:sim');
      continue;
    }
    const r = run(`npm run --silent sim -- ${args}`);
    const planted = args.includes('--plant');
    t.equal(r.code, planted ? 1 : 0, `${line}: exit ${planted ? 1 : 0}`);
    t.match(r.out, planted ? /VIOLATED \(replay: npm run sim -- --seed \d+ --plant/ : args.includes('--seed ') ? /seed \d+: \d+ events/ : / 0 violating, /);
  }
});

t.test('a bad argument is refused with E_USAGE, exit code 2, and nothing runs', async (t) => {
  for (const [args, why] of [
    ['--seeds ten', /--seeds must be a whole number from 1 to 10000000, not "ten"/],
    ['--seeds 0', /--seeds must be a whole number/],
    ['--jobs', /--jobs needs a value/],
    ['--seed 3 --seeds 4', /--seed replays one seed/],
    ['--plant typo', /--plant must be one of budget-off-by-one, leader-not-excluded, resend-new-id/],
    ['--verbose', /unknown argument --verbose/],
  ] as const) {
    const r = run(`npm run --silent sim -- ${args}`);
    t.equal(r.code, 2, `${args}: exit 2`);
    t.match(r.out, why);
    t.match(r.out, /E_USAGE/);
    t.notMatch(r.out, /seeds\/s/, 'no seed ran');
  }
});
