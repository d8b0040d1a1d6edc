/**
 * `npm run demo`, exactly as README.md gives it (after `npm ci`, which the
 * test run has done): a simulated 4-validator network upgraded 1.0.0 -> 1.1.0
 * by the coordinator and real agents, run from the test kit.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

t.test('npm run demo upgrades the simulated fleet', async (t) => {
  const env = { ...process.env };
  delete env.NODE_OPTIONS; // tap's loader hooks have no business in the demo
  for (const k of Object.keys(env)) if (k.startsWith('TAP') || k.startsWith('GUTS_UPGRADE_')) delete env[k];
  const child = spawn('npm', ['run', 'demo'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  t.equal(code, 0, 'exits 0');
  t.match(out, /fleet: n=4 f=1 quorum=3/, 'the four validators and their agents came up');
  t.match(out, /summary: rollout \S+ completed/, 'the rollout completed');
  t.match(out, /versions now: \{"1\.1\.0":4\}/, 'every node runs 1.1.0');
  if (code !== 0) t.comment(out.slice(-4000));
});
