/** `guts-upgrade-agent doctor` against a real simulated node run by the process driver. */
import t, { type Test } from 'tap';
import { makeRig } from './helpers.js';

interface Finding {
  check: string;
  verdict: string;
  detail: string;
  next: string[];
}

async function doctor(t: Test, rig: Awaited<ReturnType<typeof makeRig>>): Promise<{ code: number | null; byCheck: Record<string, Finding>; text: string }> {
  const json = await rig.cli(['doctor', '--json']);
  const findings = (JSON.parse(json.stdout) as { findings: Finding[] }).findings;
  const text = await rig.cli(['doctor']);
  t.equal(text.code, json.code, 'the same verdict in text and JSON');
  return { code: json.code, byCheck: Object.fromEntries(findings.map((f) => [f.check, f])), text: text.stdout };
}

t.test('a healthy node: no failure; a missing backup and an unreported peer count are said as such', async (t) => {
  const rig = await makeRig(t);
  await rig.startNode();
  let d = await doctor(t, rig);
  t.equal(d.code, 0, d.text);
  for (const c of ['service', 'interrupted command', 'binary', 'health', 'consensus', 'sync', 'disk'])
    t.equal(d.byCheck[c]?.verdict, 'ok', `${c}: ${d.byCheck[c]?.detail}`);
  t.equal(d.byCheck.backups?.verdict, 'warn');
  t.same(d.byCheck.backups?.next, ['guts-upgrade-agent backup create']);
  t.equal(d.byCheck.data?.verdict, 'skip', 'no data check configured');
  t.not(d.byCheck.peers?.verdict, 'fail');
  t.match(d.text, /^ok +service: /m);
  t.match(d.text, /next: guts-upgrade-agent backup create/);

  t.equal((await rig.cli(['backup', 'create'])).code, 0);
  rig.writeConfig({ commands: { verify: ['{binary}', 'verify', '--data-dir', '{dataDir}', '--full'] } });
  d = await doctor(t, rig);
  t.equal(d.code, 0, d.text);
  t.equal(d.byCheck.backups?.verdict, 'ok');
  t.equal(d.byCheck.data?.verdict, 'ok', d.byCheck.data?.detail ?? '');
});

t.test('a stopped node fails the service and health checks, with the commands that show why', async (t) => {
  const rig = await makeRig(t);
  await rig.startNode();
  await rig.driver.stop();
  const d = await doctor(t, rig);
  t.equal(d.code, 1);
  t.equal(d.byCheck.service?.verdict, 'fail');
  t.match(d.byCheck.service?.detail, /is not running/);
  t.ok(
    d.byCheck.service?.next.some((n) => n.startsWith('tail -n 100 ')),
    'process driver: read its log file',
  );
  t.equal(d.byCheck.health?.verdict, 'fail');
  t.equal(d.byCheck.consensus?.verdict, 'fail');
  t.equal(d.byCheck.sync?.verdict, 'skip');
  t.match(d.text, /^FAIL +service: /m);
  t.match(d.text, /\d+ failing/);
});

t.test('a data check that fails points at the backups to restore', async (t) => {
  const rig = await makeRig(t, { agent: { commands: { verify: ['/bin/sh', '-c', 'echo "segment 7: checksum mismatch" >&2; exit 3'] } } });
  await rig.startNode();
  const d = await doctor(t, rig);
  t.equal(d.code, 1);
  t.equal(d.byCheck.data?.verdict, 'fail');
  t.match(d.byCheck.data?.detail, /exited 3: segment 7: checksum mismatch/);
  t.ok(d.byCheck.data?.next.includes('guts-upgrade-agent backup list'));
});
