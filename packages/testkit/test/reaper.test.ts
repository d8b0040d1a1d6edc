import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { processStartTime } from '@guts-upgrade/agent/process-identity';
import { waitFor } from '@guts-upgrade/simulator';

const reaperModule = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'reaper.js');
const identityModule = import.meta.resolve('@guts-upgrade/agent/process-identity');

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/**
 * An owner process starts a reaper and two detached sleepers (one tracked by
 * pid, one by a pid file written after tracking, as an agent restarting a node
 * does), prints their pids, then waits to be killed.
 */
const OWNER = `
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
const [reaperModule, identity, list, pidFile] = process.argv.slice(2);
const { startReaper } = await import(reaperModule);
const { processStartTime } = await import(identity);
const reaper = startReaper(list);
const sleeper = () => { const c = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { detached: true, stdio: 'ignore' }); c.unref(); return c.pid; };
const a = sleeper();
reaper.track(a);
reaper.trackPidFile(pidFile);
const b = sleeper();
writeFileSync(pidFile, b + ' ' + processStartTime(b) + '\\n');
console.log(JSON.stringify({ a, b }));
setInterval(() => {}, 1000);
`;

/**
 * With -e the first argument lands in process.argv[1]. It must not be the reaper's
 * path: the reaper module then takes itself for the watcher's main, reads the
 * owner's empty stdin and exits the owner (a race the test lost now and then).
 */
const OWNER_ARGV1 = 'owner';

t.test('processes tracked by a dead owner are killed, even when it dies by SIGKILL', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'guc-reap-'));
  const owner = spawn(
    process.execPath,
    ['--input-type=module', '-e', OWNER, OWNER_ARGV1, reaperModule, identityModule, join(dir, 'list'), join(dir, 'node.pid')],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  let out = '';
  owner.stdout!.on('data', (d) => (out += d));
  const pids = (await waitFor(() => (out.includes('\n') ? (JSON.parse(out) as { a: number; b: number }) : null), {
    what: 'owner started',
    timeoutMs: 15_000,
    intervalMs: 25,
  }))!;
  t.teardown(() => {
    for (const p of [pids.a, pids.b]) if (alive(p)) process.kill(p, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  t.ok(alive(pids.a) && alive(pids.b), 'both detached sleepers run while the owner lives');
  owner.kill('SIGKILL');
  await waitFor(() => !alive(pids.a) && !alive(pids.b), { what: 'sleepers killed', timeoutMs: 15_000, intervalMs: 25 });
  t.pass('the one tracked by pid and the one named in the pid file are both gone');
});

t.test('a pid whose start time no longer matches is left alone', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'guc-reap-'));
  const bystander = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  t.teardown(() => {
    bystander.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  await waitFor(() => processStartTime(bystander.pid!) !== '', { what: 'bystander started', timeoutMs: 5_000, intervalMs: 25 });
  // The list says this pid belonged to a process started at another moment: a recycled pid.
  writeFileSync(join(dir, 'node.pid'), `${bystander.pid} 1\n`);
  const reaper = spawn(process.execPath, [reaperModule, join(dir, 'list')], { stdio: ['pipe', 'ignore', 'inherit'] });
  writeFileSync(join(dir, 'list'), `pidfile ${join(dir, 'node.pid')}\npid ${bystander.pid} 2\n`);
  const exited = new Promise((r) => reaper.once('exit', r));
  reaper.stdin!.end();
  await exited;
  t.ok(alive(bystander.pid!), 'still running');
});
