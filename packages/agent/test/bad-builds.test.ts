import fs from 'node:fs';
import t from 'tap';
import { NODE_LOG_LINES } from '@guts-upgrade/protocol';
import { makeRig, parseResult, sha, treeHash, upgradeArgs } from './helpers.js';

t.test('every bad 1.1.0 build is rolled back automatically, ending healthy on 1.0.0', async (t) => {
  const rig = await makeRig(t, {
    agent: {
      checks: {
        readyTimeoutMs: 10_000,
        versionTimeoutMs: 5000,
        syncTimeoutMs: 10_000,
        advanceWindowMs: 600,
        stabilizeMs: 1500,
        httpTimeoutMs: 3000,
        commandTimeoutMs: 30_000,
      },
    },
  });
  await rig.startNode();
  const oldSha = sha(rig.binary);
  const expect: Record<string, { code: string; mode: string }> = {
    exits: { code: 'E_START', mode: 'binary+data' },
    'never-ready': { code: 'E_HEALTH_TIMEOUT', mode: 'binary+data' },
    corrupts: { code: 'E_HEALTH_TIMEOUT', mode: 'binary+data' },
    lies: { code: 'E_VERSION_MISMATCH', mode: 'binary+data' },
  };
  for (const fault of ['exits', 'never-ready', 'corrupts', 'lies'] as const) {
    const a = rig.artifact('1.1.0', fault);
    const r = await rig.cli(upgradeArgs(a));
    if (fault === 'lies') {
      // The lying build's --version already names 1.1.0; the running node reports 1.0.1.
      t.equal(r.code, 3, `${fault}: exit 3 (rolled back)`);
    } else t.equal(r.code, 3, `${fault}: exit 3 (rolled back)`);
    const res = parseResult(r.stdout);
    t.equal(res.outcome, 'rolled_back', `${fault}: outcome`);
    t.equal(res.code, expect[fault]!.code, `${fault}: code ${res.code} ${res.message}`);
    t.same(res.rollback, { mode: expect[fault]!.mode, ok: true }, `${fault}: rollback mode`);
    t.equal(res.runningVersion, '1.0.0', `${fault}: running 1.0.0 again`);
    t.ok((res.evidence.journalTail?.length ?? 0) > 0, `${fault}: evidence has the command's journal`);
    const nodeLog = res.evidence.nodeLog ?? [];
    t.ok(nodeLog.length > 0 && nodeLog.length <= NODE_LOG_LINES, `${fault}: evidence has the node's log (${nodeLog.length} lines)`);
    // Read before the rollback restarted the old version: the failing build's own words are there.
    if (fault === 'exits')
      t.ok(
        nodeLog.some((l) => l.includes('panicked during start-up')),
        `${fault}: the panic line is in the node log`,
      );
    t.equal(sha(rig.binary), oldSha, `${fault}: old binary back`);
    t.equal(await rig.healthVersion(), '1.0.0', `${fault}: healthy on 1.0.0`);
    const ready = await fetch(`${rig.node.apiUrl}/health/ready`);
    t.equal(ready.status, 200, `${fault}: ready`);
  }
  // The data dir is the restored one and intact.
  const v = await rig.cli(['status', '--json']);
  t.equal(JSON.parse(v.stdout).status.nodeVersion, '1.0.0');
  t.ok(Object.keys(treeHash(rig.node.dataDir)).length > 0);
  t.ok(fs.existsSync(`${rig.binary}.bak`));
});
