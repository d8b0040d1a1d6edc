// No root for code not yet trusted (the zero-trust issue, item 3): a candidate's
// --version and the node's commands (smoke here) run as the node's user; the
// finding was a shell script artifact whose --version ran as uid 0.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import t from 'tap';
import { findArtifact } from '@guts-upgrade/simulator';
import { lookupUser } from '../src/run-as.js';
import { makeRig, parseResult, upgradeArgs, type Rig } from './helpers.js';

delete process.env.NODE_OPTIONS;

const isRoot = process.getuid?.() === 0;

/**
 * A candidate that tells who ran its --version (its output is kept as the check's
 * evidence) and otherwise is the real 1.0.1 build: a shell script, so it runs from
 * anywhere, whoever can read it. Signed as 1.0.1 in the rig's release repository:
 * signed is not trusted to run as root either.
 */
function whoamiCandidate(rig: Rig): { url: string; sha256: string; version: string } {
  const real = findArtifact(rig.manifest, '1.0.1').path;
  const body = `#!/bin/sh\nif [ "$1" = --version ]; then echo "guts-node 1.0.1"; echo "run by uid $(id -u) gid $(id -g)"; exit 0; fi\nexec ${real} "$@"\n`;
  const file = path.join(rig.dir, 'whoami-guts-node');
  fs.writeFileSync(file, body, { mode: 0o755 });
  rig.releases.sign(file, '1.0.1');
  return {
    url: `${rig.server.url}/release/targets/guts-node/1.0.1/guts-node`,
    sha256: crypto.createHash('sha256').update(body).digest('hex'),
    version: '1.0.1',
  };
}

function nodeSection(rig: Rig, user: string | null) {
  return { binary: rig.binary, dataDir: rig.node.dataDir, config: rig.node.configPath, apiUrl: rig.node.apiUrl, metricsUrl: rig.node.metricsUrl, user };
}

t.test(
  'the candidate and the smoke command run as node.user, not as the root agent',
  { skip: !isRoot && 'the agent switches user only as root' },
  async (t) => {
    const rig = await makeRig(t);
    await rig.startNode();
    const nobody = await lookupUser('nobody');
    rig.writeConfig({ node: nodeSection(rig, 'nobody'), commands: { smoke: ['/bin/sh', '-c', 'echo smoke as uid $(id -u)'] } });
    const a = whoamiCandidate(rig);
    const r = await rig.cli(upgradeArgs(a));
    const res = parseResult(r.stdout);
    t.equal(res.outcome, 'succeeded', `${res.code}: ${res.message}`);
    const checks = res.evidence?.checks ?? [];
    t.match(
      checks.find((c) => c.name === 'artifact-version')?.detail,
      `run by uid ${nobody.uid} gid ${nobody.gid}`,
      "the fetched file's first run was as nobody",
    );
    t.notMatch(checks.find((c) => c.name === 'artifact-version')?.detail, /run by uid 0 /, 'not as root');
    t.match(checks.find((c) => c.name === 'smoke')?.detail, `smoke as uid ${nobody.uid}`, 'the smoke command ran as the node user');
    t.equal(await rig.healthVersion(), '1.0.1', 'the upgrade went through');
    const leftovers = fs.readdirSync('/tmp').filter((f) => f.startsWith('guts-candidate-') && fs.statSync(path.join('/tmp', f)).mtimeMs > Date.now() - 600_000);
    t.same(leftovers, [], "the candidate's readable copy is removed after its run");
  },
);

t.test(
  'a node user that does not exist is a configuration error, and nothing changes',
  { skip: !isRoot && 'the agent switches user only as root' },
  async (t) => {
    const rig = await makeRig(t);
    await rig.startNode();
    rig.writeConfig({ node: nodeSection(rig, 'no-such-guts-user') });
    const r = await rig.cli(upgradeArgs(rig.artifact('1.0.1')));
    const res = parseResult(r.stdout);
    t.equal(res.outcome, 'failed');
    t.equal(res.code, 'E_CONFIG');
    t.match(res.message, /node\.user: no such user "no-such-guts-user"/);
    t.equal(await rig.healthVersion(), '1.0.0', 'the node still runs the old version');
  },
);

t.test('lookupUser: names through getent, numeric uid:gid as given', async (t) => {
  t.match(await lookupUser('root'), { uid: 0, gid: 0 });
  t.same(await lookupUser('1234:5678'), { uid: 1234, gid: 5678, label: 'uid 1234' });
  await t.rejects(lookupUser('no-such-guts-user'), { code: 'E_CONFIG' });
});
