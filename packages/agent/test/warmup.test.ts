/**
 * A node that warms up after a restart is not a failed upgrade, and a peers
 * figure the node does not give is not a pass: the agent's post-start checks
 * against a 4-validator network whose node v0 the agent upgrades.
 */
import fs from 'node:fs';
import t from 'tap';
import YAML from 'yaml';
import { waitFor } from '@guts-upgrade/simulator';
import { type CliResult, makeRig, parseResult, upgradeArgs } from './helpers.js';

const check = (res: CliResult, name: string) => {
  const found = res.evidence.checks.find((c) => c.name === name);
  if (!found) throw new Error(`the result has no ${name} check`);
  return found;
};

t.test('p2p unknown throughout, a build with 0 peers, peers rising over 5 s', async (t) => {
  const rig = await makeRig(t, { peers: 3 });
  await rig.startNode();
  const height = async () => ((await (await fetch(`${rig.node.apiUrl}/api/consensus/status`)).json()) as { finalized_height: number }).finalized_height;
  await waitFor(async () => (await height()) >= 3, { timeoutMs: 60_000, intervalMs: 100, what: 'the 4-validator chain finalizing' });
  const checks = { ...rig.config.checks, minPeers: 2, peersTimeoutMs: 6000, consensusTimeoutMs: 30_000, advanceTimeoutMs: 30_000, syncTimeoutMs: 30_000 };
  rig.writeConfig({ checks });

  await t.test("today's node: p2p unknown throughout -> the upgrade completes, peers not reported", async (t) => {
    const r = await rig.cli(upgradeArgs(rig.artifact('1.0.1')));
    const res = parseResult(r.stdout);
    t.equal(r.code, 0, `exit 0: ${res.code ?? ''} ${res.message ?? ''}`);
    t.equal(res.outcome, 'succeeded');
    const p = check(res, 'peers');
    t.match(p, { ok: true, measured: false, last: 'not reported' }, 'the result says the peers were not reported');
    t.match(p.detail, /^not reported: p2p unknown \(P2P not connected or not enabled\)/);
    t.match(check(res, 'height-advancing'), { ok: true }, 'the chain showed the node is back');
    t.equal(check(res, 'consensus')?.last, 'Active');
  });

  await t.test('a build that reports p2p up with 0 peers fails E_PEERS at the deadline and is rolled back', async (t) => {
    const r = await rig.cli(upgradeArgs(rig.artifact('1.1.0', 'isolated')));
    const res = parseResult(r.stdout);
    t.equal(r.code, 3, 'exit 3: rolled back');
    t.equal(res.outcome, 'rolled_back');
    t.equal(res.code, 'E_PEERS');
    t.match(res.message, /0 peers connected \(p2p up\) after waiting \d+ ms \(checks\.peersTimeoutMs 6000\), need at least 2/);
    const p = check(res, 'peers');
    t.match(p, { ok: false, last: '0' });
    t.notOk('measured' in p, 'measured');
    t.ok((p.waitedMs ?? 0) >= 6000, `failed at its deadline, not before (waited ${p.waitedMs} ms)`);
    t.equal(res.runningVersion, '1.0.1', 'back on 1.0.1');
    t.equal(await rig.healthVersion(), '1.0.1');
  });

  await t.test('a future node: Starting first, p2p unknown, then peers rising over 5 s -> completes, no rollback', async (t) => {
    const cfg = YAML.parse(fs.readFileSync(rig.node.configPath, 'utf8'));
    // Starting lasts 8 s from the process's start: long enough that the agent's first
    // consensus read falls inside it even on a loaded machine (the start step alone
    // took 1.2 s under CI load), short of consensusTimeoutMs (30 s).
    cfg.sim = { ...cfg.sim, p2p_report: 'reported', p2p_warmup_ms: 5000, consensus_start_ms: 8000, storage_open_ms: 300 };
    fs.writeFileSync(rig.node.configPath, YAML.stringify(cfg));
    rig.writeConfig({ checks: { ...checks, minPeers: 3, peersTimeoutMs: 30_000 } });
    const r = await rig.cli(upgradeArgs(rig.artifact('1.1.0')));
    const res = parseResult(r.stdout);
    t.equal(r.code, 0, `exit 0: ${res.code ?? ''} ${res.message ?? ''}`);
    t.equal(res.outcome, 'succeeded');
    t.notOk(res.rollback, 'no rollback');
    t.match(check(res, 'peers'), { ok: true, last: '3' }, 'all three peers, as the node reports them');
    t.notOk('measured' in check(res, 'peers'));
    t.match(check(res, 'consensus'), { ok: true, last: /^(Syncing|Active)$/ }, 'out of Starting');
    t.match(r.stderr, /waiting for consensus to leave Starting: enabled=true state=Starting/, 'the Starting state was seen and waited out');
    t.equal(await rig.healthVersion(), '1.1.0');
  });
});
