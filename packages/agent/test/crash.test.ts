/**
 * kill -9 of the agent CLI at every step (GUTS_UPGRADE_TEST_PAUSE_AT), then
 * `recover`: before stop the command is discarded with the node untouched;
 * from stop to verify it is rolled back; in commit it completes; in rollback
 * the rollback is redone.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { kill9, makeRig, parseResult, pausedAt, pauseAndKill as pauseAndKillCli, sha, upgradeArgs, type Rig } from './helpers.js';

function pauseAndKill(rig: Rig, step: string, args: string[]): Promise<void> {
  return pauseAndKillCli(rig.spawnCli, path.join(rig.dir, `paused-${step}`), step, args, 30_000);
}

t.test('crash at each step, then recover', async (t) => {
  const rig = await makeRig(t);
  await rig.startNode();
  const oldSha = sha(rig.binary);
  const minor = rig.artifact('1.1.0');

  // Busy: while a (live, paused) agent holds the lock, another CLI command is refused.
  {
    const child = await pausedAt(rig.spawnCli, path.join(rig.dir, 'paused-busy'), 'backup', upgradeArgs(minor), 30_000);
    const busy = await rig.cli(upgradeArgs(minor));
    t.equal(busy.code, 4, 'E_BUSY exit code');
    t.match(busy.stderr, /E_BUSY/);
    const st = JSON.parse((await rig.cli(['status', '--json'])).stdout);
    t.equal(st.status.busy.step, 'backup', 'status shows the busy step');
    const nothing = await rig.cli(['recover']);
    t.match(nothing.stdout, /is running/, 'recover leaves a live owner alone');
    await kill9(child);
    const rec = await rig.cli(['recover', '--json']);
    t.equal(parseResult(rec.stdout).code, 'E_INTERRUPTED');
  }

  for (const step of ['preflight', 'fetch', 'backup']) {
    const pid = rig.driver.pid();
    await pauseAndKill(rig, step, upgradeArgs(minor));
    const rec = await rig.cli(['recover', '--json']);
    const r = parseResult(rec.stdout);
    t.equal(r.outcome, 'failed', `${step}: discarded`);
    t.equal(r.code, 'E_INTERRUPTED', `${step}: E_INTERRUPTED`);
    t.equal(rig.driver.pid(), pid, `${step}: node untouched (same process)`);
    t.equal(sha(rig.binary), oldSha, `${step}: binary untouched`);
  }
  t.same(fs.existsSync(rig.config.backup.dir) ? fs.readdirSync(rig.config.backup.dir).filter((d) => d.startsWith('b-')) : [], [], 'partial backups discarded');

  for (const step of ['stop', 'install', 'migrate', 'start', 'verify']) {
    await pauseAndKill(rig, step, upgradeArgs(minor));
    t.ok(fs.existsSync(rig.binary), `${step}: binary path never missing`);
    const rec = await rig.cli(['recover', '--json']);
    t.equal(rec.code, 3, `${step}: recover exit 3`);
    const r = parseResult(rec.stdout);
    t.equal(r.outcome, 'rolled_back', `${step}: rolled back`);
    t.equal(r.code, 'E_INTERRUPTED');
    t.equal(r.runningVersion, '1.0.0', `${step}: running 1.0.0`);
    t.equal(sha(rig.binary), oldSha, `${step}: old binary`);
    t.equal(await rig.healthVersion(), '1.0.0');
  }

  // Died while rolling back a failed upgrade: the rollback is redone.
  await pauseAndKill(rig, 'rollback', upgradeArgs(rig.artifact('1.1.0', 'exits')));
  {
    const rec = await rig.cli(['recover', '--json']);
    const r = parseResult(rec.stdout);
    t.equal(r.outcome, 'rolled_back', 'rollback: redone');
    t.equal(await rig.healthVersion(), '1.0.0');
    t.equal(sha(rig.binary), oldSha);
  }

  // Died in commit (verify had passed): the upgrade completes. (The good 1.1.0 signed again: the bad build above replaced it.)
  await pauseAndKill(rig, 'commit', upgradeArgs(rig.artifact('1.1.0')));
  {
    const rec = await rig.cli(['recover', '--json']);
    const r = parseResult(rec.stdout);
    t.equal(r.outcome, 'succeeded', 'commit: finished');
    t.equal(await rig.healthVersion(), '1.1.0');
  }
  // The daemon also recovers on start; with nothing pending `recover` is a no-op.
  t.match((await rig.cli(['recover'])).stdout, /nothing to recover/);
});
