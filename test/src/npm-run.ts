/**
 * `npm run <script> [-- args]` from the checkout's root, as a reader types it
 * after `npm ci`: without tap's loader hooks and without the environment that
 * steers the project's programs (GUTS_UPGRADE_*, BENCH_*), so the run is the
 * documented one. Killed (SIGINT, as Ctrl-C) if the test ends first.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export async function npmRun(t: { teardown(fn: () => void): void }, args: string[]): Promise<{ code: number | null; out: string }> {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  for (const k of Object.keys(env)) if (k.startsWith('TAP') || k.startsWith('GUTS_UPGRADE_') || k.startsWith('BENCH_')) delete env[k];
  const child = spawn('npm', ['run', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  return { code, out };
}
