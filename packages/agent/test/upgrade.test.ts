import path from 'node:path';
import t from 'tap';
import { makeRig, parseResult, sha, upgradeArgs } from './helpers.js';

t.test('patch, minor (automatic migration), major (manual migration) upgrades, downgrade refused, rollback command', async (t) => {
  const rig = await makeRig(t, {
    agent: {
      commands: {
        migrate: ['{binary}', 'migrate', '--from', '{from}', '--to', '{to}', '--data-dir', '{dataDir}'],
        verify: ['{binary}', 'verify', '--data-dir', '{dataDir}', '--full'],
      },
    },
  });
  await rig.startNode();
  t.equal(await rig.healthVersion(), '1.0.0');

  const patch = await rig.cli(upgradeArgs(rig.artifact('1.0.1')));
  t.equal(patch.code, 0, `patch exit 0 (${patch.stderr.slice(-500)})`);
  const pr = parseResult(patch.stdout);
  t.equal(pr.outcome, 'succeeded');
  t.equal(pr.migration, 'none');
  t.equal(pr.runningVersion, '1.0.1');
  t.equal(await rig.healthVersion(), '1.0.1');
  t.equal(sha(rig.binary), rig.artifact('1.0.1').sha256, 'binary is the new build');
  t.equal(sha(`${rig.binary}.bak`), rig.artifact('1.0.0').sha256, 'old binary kept as guts-node.bak');
  t.match(patch.stderr, /backup\s+started/, 'progress lines on stderr');

  const minor = await rig.cli(upgradeArgs(rig.artifact('1.1.0')));
  t.equal(minor.code, 0, `minor exit 0 (${minor.stderr.slice(-500)})`);
  const mr = parseResult(minor.stdout);
  t.equal(mr.migration, 'automatic');
  t.equal(mr.runningVersion, '1.1.0');

  // A major is approved by its signed path kind: signed as at most minor, 2.0.0 is refused.
  const a2 = rig.artifact('2.0.0');
  rig.releases.sign(path.join(rig.dir, 'artifacts', path.basename(a2.url)), '2.0.0', { pathKind: 'minor' });
  const noApproval = await rig.cli(upgradeArgs(a2));
  t.equal(noApproval.code, 1, 'a major the release does not sign as major is refused');
  t.equal(parseResult(noApproval.stdout).code, 'E_RELEASE_POLICY');

  rig.releases.sign(path.join(rig.dir, 'artifacts', path.basename(a2.url)), '2.0.0', { pathKind: 'major' });
  const major = await rig.cli(upgradeArgs(a2));
  t.equal(major.code, 0, `major exit 0 (${major.stderr.slice(-800)})`);
  const jr = parseResult(major.stdout);
  t.equal(jr.migration, 'manual');
  t.equal(jr.runningVersion, '2.0.0');
  t.ok(
    jr.evidence.checks.some((c: { name: string; ok: boolean }) => c.name === 'migration-command' && c.ok),
    'migration command ran',
  );

  const down = await rig.cli(upgradeArgs(rig.artifact('1.2.0')));
  t.equal(down.code, 1);
  t.equal(parseResult(down.stdout).code, 'E_DOWNGRADE');
  t.equal(await rig.healthVersion(), '2.0.0', 'refusal changed nothing');

  const rb = await rig.cli(['rollback', '--json']);
  t.equal(rb.code, 0, `rollback exit 0 (${rb.stderr.slice(-800)})`);
  const rr = parseResult(rb.stdout);
  t.equal(rr.outcome, 'succeeded');
  t.same(rr.rollback, { mode: 'binary+data', ok: true });
  t.equal(await rig.healthVersion(), '1.1.0', 'back on the version before the major upgrade');

  const again = await rig.cli(['rollback', '--json']);
  t.equal(again.code, 1);
  t.equal(parseResult(again.stdout).code, 'E_NOTHING_TO_ROLLBACK');

  const status = await rig.cli(['status', '--json']);
  t.equal(status.code, 0);
  t.equal(JSON.parse(status.stdout).status.nodeVersion, '1.1.0');
});
