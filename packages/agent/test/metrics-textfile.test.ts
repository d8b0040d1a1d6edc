import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import t from 'tap';
import { Agent } from '../src/agent.js';
import { TextfileWriter } from '../src/metrics-textfile.js';
import { waitFor } from '@guts-upgrade/simulator';
import { makeRig, upgradeArgs } from './helpers.js';

t.test('the textfile shows a real upgrade: counters from the journal, downtime, version, backups', async (t) => {
  const rig = await makeRig(t);
  await rig.startNode();
  const up = await rig.cli(upgradeArgs(rig.artifact('1.0.1')));
  t.equal(up.code, 0, `upgrade exit 0 (${up.stderr.slice(-500)})`);

  const file = path.join(rig.dir, 'guts_upgrade_agent.prom');
  // A second process reading the same journal, as the daemon does after the CLI ran a command.
  const agent = new Agent(rig.config, pino({ level: 'silent' }));
  t.teardown(() => agent.close());
  const writer = new TextfileWriter(agent, file, 60_000);
  await writer.write();
  const text = fs.readFileSync(file, 'utf8');
  t.match(text, /^guts_upgrade_agent_commands_total\{node_id="v0",kind="upgrade",outcome="succeeded"\} 1$/m);
  t.match(text, /^guts_upgrade_agent_last_result_info\{node_id="v0",kind="upgrade",outcome="succeeded",code=""\} 1$/m);
  const downtime = Number(/^guts_upgrade_agent_last_downtime_seconds\{node_id="v0"\} (\S+)$/m.exec(text)?.[1]);
  t.ok(downtime > 0, `last downtime recorded (${downtime} s)`);
  t.match(text, /^guts_upgrade_agent_node_up\{node_id="v0"\} 1$/m);
  t.match(text, /^guts_upgrade_agent_node_version_info\{node_id="v0",version="1\.0\.1"\} 1$/m);
  t.match(text, /^guts_upgrade_agent_backups\{node_id="v0",status="complete"\} 1$/m);
  t.ok(Number(/^guts_upgrade_agent_backup_bytes\{node_id="v0",status="complete"\} (\d+)$/m.exec(text)?.[1]) > 0, 'backup bytes');
  t.match(text, /^# TYPE guts_upgrade_agent_commands_total counter$/m);
  t.same(
    fs.readdirSync(rig.dir).filter((f) => f.includes('guts_upgrade_agent')),
    ['guts_upgrade_agent.prom'],
    'no temporary file left beside it',
  );
});

t.test('run: a missing textfile directory is refused before anything starts; a good one is written at start', async (t) => {
  const rig = await makeRig(t);
  await rig.startNode();
  const dir = path.join(rig.dir, 'textfile_collector');
  const file = path.join(dir, 'guts_upgrade_agent.prom');
  rig.writeConfig({ metrics: { textfile: file } });
  const refused = await rig.cli(['config', 'validate']);
  t.equal(refused.code, 2, 'config validate exits 2');
  t.match(refused.stderr, /E_CONFIG.*metrics\.textfile: directory .* does not exist/);
  t.notOk(fs.existsSync(dir), 'nothing created');

  fs.mkdirSync(dir);
  const daemon = rig.spawnCli(['run']);
  const exited = new Promise<number | null>((resolve) => daemon.on('close', (code) => resolve(code)));
  await waitFor(() => fs.existsSync(file), { what: 'textfile written at start', timeoutMs: 15_000 });
  t.match(fs.readFileSync(file, 'utf8'), /^guts_upgrade_agent_node_up\{node_id="v0"\} 1$/m);
  daemon.kill('SIGTERM');
  t.equal(await exited, 0, 'the daemon stops cleanly');
});
