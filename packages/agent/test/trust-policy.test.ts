/**
 * Signed or nothing (trust-policy.ts), against a real node: without a trusted
 * root nothing is fetched or touched unless the host says `allowUnsigned`,
 * which it then says loudly; and what a command asks for (allowDowngrade,
 * approvedMajor) never widens the host's own policy.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { PROTOCOL_VERSION, type Command, type Result } from '@guts-upgrade/protocol';
import { Agent } from '../src/agent.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { makeRig, parseResult, sha, UNSIGNED_HOST, upgradeArgs, type Rig } from './helpers.js';

// The agent runs in this process in the last test and spawns the node: keep tap's loader out of it.
delete process.env.NODE_OPTIONS;

const WARNING = /allowUnsigned is set and no release repository is configured/;

function stagedFiles(rig: Rig): string[] {
  return fs.existsSync(rig.config.stagingDir) ? fs.readdirSync(rig.config.stagingDir) : [];
}

t.test('no trusted root and no allowUnsigned: upgrade and prepare refused E_UNSIGNED_REFUSED, nothing fetched or changed', async (t) => {
  const rig = await makeRig(t, { agent: { release: {} } });
  await rig.startNode();
  const a = rig.artifact('1.0.1');
  const binBefore = sha(rig.binary);
  const requests = rig.server.stats.requests;
  for (const args of [upgradeArgs(a), ['prepare', '--to', a.version, '--url', a.url, '--sha256', a.sha256, '--json']]) {
    const r = await rig.cli(args);
    t.equal(r.code, 1, `${args[0]}: exit 1 (failed, node unchanged)`);
    const res = parseResult(r.stdout);
    t.equal(res.code, 'E_UNSIGNED_REFUSED', `${args[0]}: ${res.message}`);
    t.match(res.message ?? '', /no trusted root .*allowUnsigned is not set; nothing was changed/);
  }
  // A digest key is no trusted root: it binds no version, path kind or expiry.
  const keyFile = path.join(rig.dir, 'release.pub');
  fs.writeFileSync(keyFile, '-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n');
  rig.writeConfig({ releasePublicKey: keyFile });
  const keyed = await rig.cli(upgradeArgs(a));
  t.equal(parseResult(keyed.stdout).code, 'E_UNSIGNED_REFUSED', 'releasePublicKey alone does not open the door');
  t.equal(rig.server.stats.requests, requests, 'not a byte was requested from the artifact server');
  t.same(stagedFiles(rig), [], 'nothing staged');
  t.equal(sha(rig.binary), binBefore, 'binary unchanged');
  t.equal(await rig.healthVersion(), '1.0.0', 'the node still runs 1.0.0');

  const doctor = await rig.cli(['doctor', '--json']);
  const releases = (JSON.parse(doctor.stdout) as { findings: { check: string; verdict: string; detail: string }[] }).findings.find(
    (f) => f.check === 'releases',
  );
  t.equal(releases?.verdict, 'fail', `doctor says so: ${releases?.detail}`);
});

/** What the coordinator's connection does with each command it receives (connection.ts): submit it to an Agent. */
async function submit(rig: Rig, version: string, options: Record<string, boolean>): Promise<Result> {
  const agent = new Agent(loadConfig(rig.configPath, {}), createLogger('silent', true));
  try {
    const a = rig.artifact(version);
    const command: Command = {
      proto: PROTOCOL_VERSION,
      type: 'command',
      id: `c-${version}-${Object.keys(options).join('-')}-${Math.random().toString(36).slice(2, 8)}`,
      kind: 'upgrade',
      issuedAt: new Date().toISOString(),
      target: { version, url: a.url, sha256: a.sha256 },
      options,
    };
    const sub = await agent.submit(command);
    if (sub.ack !== 'accepted') throw new Error(`not accepted: ${JSON.stringify(sub)}`);
    return await sub.done;
  } finally {
    await agent.idle();
    agent.close();
  }
}

t.test('allowUnsigned: the url path works, the agent warns at start and at the command, and a command cannot approve a major', async (t) => {
  const rig = await makeRig(t, { agent: UNSIGNED_HOST });
  await rig.startNode();
  const r = await rig.cli(upgradeArgs(rig.artifact('1.0.1')));
  t.equal(r.code, 0, 'upgraded');
  t.equal(await rig.healthVersion(), '1.0.1');
  const warnings = r.stderr.split('\n').filter((l) => WARNING.test(l));
  t.equal(warnings.length, 2, 'one warning as the agent starts, one as the command begins');
  t.ok(
    warnings.every((l) => (JSON.parse(l) as { level: number }).level === 40),
    'at warn level',
  );
  const doctor = await rig.cli(['doctor', '--json']);
  const releases = (JSON.parse(doctor.stdout) as { findings: { check: string; verdict: string }[] }).findings.find((f) => f.check === 'releases');
  t.equal(releases?.verdict, 'warn');

  const binBefore = sha(rig.binary);
  const major = await submit(rig, '2.0.0', { approvedMajor: true });
  t.equal(major.code, 'E_MAJOR_NOT_APPROVED', `a major with the command's approvedMajor: ${major.message}`);
  t.equal(sha(rig.binary), binBefore, 'binary unchanged');
  rig.writeConfig({ release: { allowMajor: true } });
  const local = await submit(rig, '2.0.0', {});
  t.equal(local.code, 'E_CONFIG', `release.allowMajor on the host: past the major check, stopped by the missing migration command (${local.message})`);
});

t.test('signed: the migration the release owners signed is the one the agent runs; a command cannot widen the policy, the host can', async (t) => {
  const rig = await makeRig(t);
  await rig.startNode();
  const a = rig.artifact('1.0.1'); // a patch: no migration by its numbers
  const file = path.join(rig.dir, 'artifacts', path.basename(a.url));
  rig.releases.sign(file, '1.0.1', { migration: 'manual' });
  const binBefore = sha(rig.binary);
  const r = await rig.cli(upgradeArgs(a));
  const res = parseResult(r.stdout);
  t.equal(res.code, 'E_CONFIG', `signed manual, no migration command on the host: ${res.message}`);
  t.match(res.message ?? '', /signed release 1\.0\.1 needs a manual migration/);
  t.equal(sha(rig.binary), binBefore, 'binary unchanged');
  t.equal(await rig.healthVersion(), '1.0.0');

  rig.releases.sign(file, '1.0.1', { migration: 'automatic' });
  const ok = await rig.cli(upgradeArgs(a));
  const done = parseResult(ok.stdout);
  t.equal(done.outcome, 'succeeded', `${done.code ?? ''} ${done.message ?? ''}`);
  t.equal(done.migration, 'automatic', 'the result names the signed migration');

  const at101 = sha(rig.binary);
  const down = await submit(rig, '1.0.0', { allowDowngrade: true });
  t.equal(down.code, 'E_DOWNGRADE', `a downgrade with the command's allowDowngrade: ${down.message}`);
  // The signed path kind major allows 2.0.0; what stops it is the host's missing migration command.
  const major = await submit(rig, '2.0.0', { approvedMajor: true });
  t.equal(major.code, 'E_CONFIG', `a signed major: past the major check (${major.message})`);
  t.equal(sha(rig.binary), at101, 'binary unchanged');
  t.equal(await rig.healthVersion(), '1.0.1');

  rig.writeConfig({ release: { repository: rig.config.release.repository, root: rig.config.release.root, allowDowngrade: true } });
  const local = await submit(rig, '1.0.0', {});
  t.equal(local.outcome, 'succeeded', `release.allowDowngrade on the host: ${local.code ?? ''} ${local.message ?? ''}`);
  t.equal(await rig.healthVersion(), '1.0.0');
});
