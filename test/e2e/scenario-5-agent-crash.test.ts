// Scenario 5: the agent is killed -9 by systemd (`systemctl kill -s KILL`)
// during backup, during install and during verification; systemd restarts
// it, it recovers from its journal, and every host ends healthy on a known
// version with its binary present and guts-node active.
import t from 'tap';
import { waitFor } from '@guts-upgrade/simulator';
import { preflight, sleep } from '../src/testbed/index.js';
import { AGENT_UNIT, NODE_UNIT, Scenario } from '../src/scenario/index.js';

const PAUSE_FILE = '/var/lib/guts-upgrade/test-pause';
const DROPIN = `/etc/systemd/system/${AGENT_UNIT}.d/test-pause.conf`;

const pf = await preflight();
if (!pf.ok) t.plan(0, pf.reason ?? 'testbed unavailable');
else
  await t.test('agent kill -9 during backup, install and verify', { timeout: 290_000 }, async (t) => {
    const s = await Scenario.start(t, { name: 's5', hosts: 4 });
    const cases: [string, string][] = [
      ['v0', 'backup'],
      ['v1', 'install'],
      ['v2', 'verify'],
    ];
    const measured: string[] = [];
    for (const [name, step] of cases) {
      await t.test(`kill -9 during ${step} on ${name}`, async (t) => {
        const h = s.host(name);
        // The agent's test hook: hang right after journaling `step`, marker in PAUSE_FILE.
        await h.writeFile(DROPIN, `[Service]\nEnvironment=GUTS_UPGRADE_TEST_PAUSE_AT=${step}\nEnvironment=GUTS_UPGRADE_TEST_PAUSE_FILE=${PAUSE_FILE}\n`);
        await h.systemctl('daemon-reload');
        t.equal((await h.systemctl('restart', AGENT_UNIT)).code, 0, 'agent restarted with the pause hook');
        await s.waitHealthy(`${name} agent reconnected`);

        const created = await s.startRollout(s.artifact('1.1.0'), { strategy: 'rolling', nodes: [name] });
        const id = created.rollout.id;
        await waitFor(async () => ((await h.readFile(PAUSE_FILE).catch(() => '')).includes(step) ? true : undefined), {
          what: `${name} agent paused at ${step}`,
          timeoutMs: 120_000,
          intervalMs: 100,
        });
        const before = await s.versions(h);
        // The restarted agent must not pause again.
        await h.exec('rm', ['-f', DROPIN, PAUSE_FILE], { check: true });
        await h.systemctl('daemon-reload');
        const pid0 = (await h.systemctl('show', '-P', 'MainPID', AGENT_UNIT)).stdout.trim();
        const k = await h.systemctl('kill', '-s', 'KILL', AGENT_UNIT);
        t.equal(k.code, 0, `systemctl kill -s KILL ${AGENT_UNIT} (pid ${pid0}, node was ${before.active} on ${before.running ?? 'nothing'})`);
        // systemd restarts it (Restart=on-failure) and it recovers from its journal.
        await waitFor(
          async () => {
            const pid = (await h.systemctl('show', '-P', 'MainPID', AGENT_UNIT)).stdout.trim();
            return pid !== '0' && pid !== pid0 ? true : undefined;
          },
          { what: 'agent restarted by systemd', timeoutMs: 60_000, intervalMs: 200 },
        );
        const restarts = (await h.systemctl('show', '-P', 'NRestarts', AGENT_UNIT)).stdout.trim();
        t.ok(Number(restarts) >= 1, `systemd restarted the agent (NRestarts=${restarts})`);

        const end = await s.waitRollout(id, ['completed', 'paused', 'failed'], 120_000, t);
        const cmds = await s.agentCommands(h);
        const cmd = cmds.find((c) => c.id.startsWith(id));
        t.ok(cmd && ['succeeded', 'rolled_back', 'failed'].includes(cmd.state), `journal: command ended ${cmd?.state} via ${cmd?.path}`);
        t.match(await h.journal(AGENT_UNIT, 400), /recover/i, 'the restarted agent recovered the interrupted command');
        await h.waitForUnit(NODE_UNIT, 'active', 60_000);
        const v = await waitFor(
          async () => {
            const x = await s.versions(h);
            return x.running ? x : undefined;
          },
          { what: `${name} node running`, timeoutMs: 60_000, intervalMs: 300 },
        );
        t.ok(['1.0.0', '1.1.0'].includes(v.binary), `binary present, --version ${v.binary}`);
        t.equal(v.running, v.binary, 'the running node reports the installed version');
        t.equal(v.active, 'active', 'guts-node.service active');
        t.equal(v.agent, 'active', 'agent active again');
        if (step === 'backup') t.equal(v.binary, '1.0.0', 'interrupted before stop: the node was never touched');
        else t.equal(v.binary, '1.0.0', 'interrupted after stop: rolled back to 1.0.0');
        measured.push(`${step}@${name}: journal ${cmd?.state} (${cmd?.path}), rollout ${end.rollout.state}, ends on ${v.binary}`);
        if (!['completed', 'failed', 'aborted'].includes(end.rollout.state)) await s.api('POST', `/api/v1/rollouts/${id}/abort`, {});
        await sleep(500);
      });
    }
    await s.waitHealthy('every node healthy at the end');
    t.comment(`MEASURED s5: ${measured.join('; ')}`);
    await s.teardown();
    const l = await s.leftovers();
    t.ok(l.clean, `nothing of the lab left: ${JSON.stringify(l.left)}`);
  });
