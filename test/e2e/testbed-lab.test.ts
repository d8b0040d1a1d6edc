// The real-systemd testbed itself: two hosts boot, run the project's
// guts-node.service (with a stand-in binary), talk across the bridge, get
// partitioned and healed, and teardown leaves nothing behind.
import t from 'tap';
import { promises as fs, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import { GUTS_DATA, isClean, leftovers, preflight, provisionGutsNode, REPO_ROOT, startLab, type Lab } from '../src/testbed/index.js';

const pf = await preflight();
if (!pf.ok) {
  t.plan(0, pf.reason ?? 'testbed unavailable');
} else {
  await main();
}

function get(url: string, socketPath?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get(socketPath ? { socketPath, path: url } : url, (res) => {
      let b = '';
      res
        .setEncoding('utf8')
        .on('data', (d: string) => (b += d))
        .on('end', () => resolve(b));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
  });
}

async function main(): Promise<void> {
  // The incident this testbed guards against emptied the machine's /tmp.
  const canary = path.join('/tmp', `testbed-canary-${process.pid}`);
  await fs.writeFile(canary, 'still here\n');
  t.teardown(() => fs.rm(canary, { force: true }));

  const scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'gutslab-t-'));
  t.teardown(() => fs.rm(scratch, { recursive: true, force: true }));

  // A directory under the machine's /tmp, which every host replaces with its
  // own: shared, as a checkout under /tmp is, it must still be there.
  const shared = path.join(scratch, 'shared');
  await fs.mkdir(shared);
  await fs.writeFile(path.join(shared, 'made-before-boot'), 'shared\n');

  const lab: Lab = await startLab({ hosts: ['v0', 'v1'], scratchDir: scratch, share: [REPO_ROOT, shared] });
  t.teardown(() => lab.teardown());
  const [v0, v1] = [lab.host('v0'), lab.host('v1')];

  await t.test('both hosts boot to running', async (t) => {
    for (const h of lab.hosts) {
      const s = await h.systemState();
      t.equal(s.state, 'running', `${h.name} is running (failed units: ${s.failed.join(', ') || 'none'})`);
      t.same(s.failed, [], `${h.name} has no failed units`);
      t.equal((await h.exec('hostname')).stdout.trim(), h.name, 'own hostname');
      t.match((await h.exec('getent', ['passwd', 'guts'])).stdout, /^guts:/, 'guts user exists');
    }
    t.not(v0.pid, v1.pid);
  });

  await t.test('a host sees the checkout read-through and keeps its writes', async (t) => {
    t.ok(existsSync(v0.rootPath(path.join(REPO_ROOT, 'package.json'))), 'checkout visible');
    t.equal((await v0.exec('/usr/bin/node', ['-e', 'console.log(process.version)'])).stdout.trim(), process.version, 'node runs');
    // A file made after boot is visible too (overlay lower = live /).
    const probe = path.join(REPO_ROOT, 'test', 'dist', `.gutslab-probe-${process.pid}`);
    await fs.writeFile(probe, 'late');
    t.teardown(() => fs.rm(probe, { force: true }));
    t.equal((await v0.exec('cat', [probe])).stdout, 'late', 'later file under /work visible');
    await v0.writeFile('/etc/guts/only-v0', 'v0');
    await v0.exec('sh', ['-c', 'echo hi > /tmp/in-v0; echo hi > /var/tmp/in-v0'], { check: true });
    t.notOk(existsSync('/etc/guts/only-v0'), 'host write not on the machine');
    t.notOk(existsSync('/tmp/in-v0'), 'host /tmp is its own');
    t.notOk(existsSync(v1.rootPath('/etc/guts/only-v0')), 'host write not on the other host');
    t.equal(await v0.readFile('/etc/guts/only-v0'), 'v0');
  });

  await t.test('a shared directory under /tmp is seen at its path, read-only', async (t) => {
    t.equal(await v0.readFile(path.join(shared, 'made-before-boot')), 'shared\n', 'visible in the host despite its own /tmp');
    await fs.writeFile(path.join(shared, 'made-after-boot'), 'late\n');
    t.equal((await v1.exec('cat', [path.join(shared, 'made-after-boot')])).stdout, 'late\n', 'live: a later file is visible too');
    const w = await v0.exec('sh', ['-c', `echo x > '${path.join(shared, 'from-host')}'`]);
    t.not(w.code, 0, 'a host cannot write into it');
    t.notOk(existsSync(path.join(shared, 'from-host')), 'nothing written on the machine');
  });

  await t.test('guts-node.service runs hardened and is reachable across the bridge', async (t) => {
    await provisionGutsNode(v0, { config: `listen: ${v0.addr}:7000\n` });
    await v0.waitForUnit('guts-node.service');
    const url = `http://${v0.addr}:7000/`;
    const body = await v1.exec('curl', ['-sS', '--max-time', '10', '--retry', '20', '--retry-connrefused', '--retry-delay', '1', url]);
    t.equal(body.code, 0, 'v1 reaches v0 across the bridge', { stderr: body.stderr });
    const facts = JSON.parse(body.stdout) as Record<string, unknown>;
    t.equal(facts.host, 'v0');
    t.not(facts.uid, 0, 'runs as an unprivileged user');
    t.equal(facts.writeData, true, 'can write its data dir');
    t.equal(facts.writeEtc, false, 'cannot write /etc (ProtectSystem=strict)');
    t.equal(facts.writeUsrLocal, false, 'cannot write /usr/local');
    t.equal(facts.writeTmp, true, 'has a (private) /tmp');
    t.equal(facts.seesRoot, false, 'no /root (ProtectHome)');
    t.equal(facts.readsWork, true, '/work stays readable');
    const mainPid = (await v0.systemctl('show', '-P', 'MainPID', 'guts-node.service')).stdout.trim();
    const status = await v0.readFile(`/proc/${mainPid}/status`);
    t.match(status, /^NoNewPrivs:\s+1$/m, 'NoNewPrivileges applies');
    t.match(status, /^Seccomp:\s+2$/m, 'seccomp filter applies (SystemCallFilter, RestrictAddressFamilies)');
    t.match(status, /^CapEff:\s+0+$/m, 'no capabilities');
    const owner = await v0.exec('stat', ['-c', '%U', GUTS_DATA]);
    t.equal(owner.stdout.trim(), 'guts', 'data dir owned by guts');
    t.match(await v0.journal('guts-node.service'), /standin guts-node listening/, 'journal has its output');

    // Restart=on-failure brings it back after a crash.
    const pid1 = (await v0.systemctl('show', '-P', 'MainPID', 'guts-node.service')).stdout.trim();
    await v0.systemctl('kill', '-s', 'SIGKILL', 'guts-node.service');
    let pid2 = pid1;
    for (let i = 0; i < 100 && (pid2 === pid1 || pid2 === '0'); i++) {
      await new Promise((r) => setTimeout(r, 200));
      pid2 = (await v0.systemctl('show', '-P', 'MainPID', 'guts-node.service')).stdout.trim();
    }
    t.not(pid2, pid1, 'restarted after SIGKILL');
    await v0.waitForUnit('guts-node.service');
  });

  await t.test('partition blocks the host, heal restores it', async (t) => {
    const url = `http://${v0.addr}:7000/`;
    await lab.partition('v0');
    const cut = await v1.exec('curl', ['-sS', '--max-time', '3', url]);
    t.not(cut.code, 0, 'unreachable while partitioned');
    const fromV0 = await v0.exec('curl', ['-sS', '--max-time', '3', `http://${v1.addr}:9/`]);
    t.match(fromV0.stderr, /timed out|unreachable|No route/i, 'v0 cannot reach out either');
    await lab.heal('v0');
    const back = await v1.exec('curl', ['-sS', '--max-time', '5', '--retry', '10', '--retry-all-errors', '--retry-delay', '1', url]);
    t.equal(back.code, 0, 'reachable again after heal', { stderr: back.stderr });
  });

  await t.test('a lab process is reachable from hosts and, via forward, from the test', async (t) => {
    const server = `require('http').createServer((q,s)=>s.end('lab:'+q.url)).listen(8080,'${lab.labAddr}')`;
    lab.spawnInLab(process.execPath, ['-e', server]);
    const fromHost = await v1.exec('curl', ['-sS', '--max-time', '5', '--retry', '20', '--retry-connrefused', '--retry-delay', '1', 'http://lab:8080/x']);
    t.equal(fromHost.stdout, 'lab:/x', 'host reaches the lab address by name');
    const fwd = await lab.forward(8080);
    t.equal(await get(`http://127.0.0.1:${fwd.port}/tcp`), 'lab:/tcp', 'test reaches it over 127.0.0.1');
    t.equal(await get('/unix', fwd.socketPath), 'lab:/unix', 'and over the unix socket');
    const toHost = await lab.forward(7000, v0.addr);
    t.match(await get(`http://127.0.0.1:${toHost.port}/`), /"host":"v0"/, 'forward reaches a host service');
    const r = await lab.runInLab('ip', ['-br', 'addr', 'show', 'dev', 'br0']);
    t.match(r.stdout, lab.labAddr, 'runInLab runs in the lab netns');
  });

  await t.test('netem is either available or refused with a reason', async (t) => {
    if (pf.netem) {
      await lab.netem('v1', 'delay 50ms');
      await lab.clearNetem('v1');
      t.pass('netem applied and cleared');
    } else {
      await t.rejects(lab.netem('v1', 'delay 50ms'), /CONFIG_NET_SCH_NETEM/);
    }
  });

  await t.test('teardown leaves nothing and the machine /tmp is intact', async (t) => {
    await lab.teardown();
    await lab.teardown(); // idempotent
    const left = await leftovers(lab.id);
    t.ok(isClean(left), `nothing left: ${JSON.stringify(left)}`);
    t.equal(await fs.readFile(canary, 'utf8'), 'still here\n', 'canary in /tmp survived');
    t.same(await fs.readdir(path.join(scratch, 'hosts', 'v0')), [], 'host tmpfs was private to the host');
  });
}
