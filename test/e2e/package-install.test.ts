// The operator's path from the packages: four fresh testbed hosts, each with the
// checkout, node_modules and the machine's own Node hidden, install the .debs
// with dpkg -i under their real systemd; v0 runs the coordinator, every host an
// agent and a (simulated) guts-node; a rolling 1.0.0 -> 1.1.0 rollout is then
// planned, started and watched with the packaged `guts-upgrade` CLI only.
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { pubkeyFor } from '@guts-upgrade/simulator';
import { sectionBlocks } from '../src/docs/commands.js';
import { FAST_TIMINGS, NODE_API_PORT } from '../src/scenario/harness.js';
import { preflight, provisionGutsNode, REPO_ROOT, startLab, type Host } from '../src/testbed/index.js';
import { createReleaseSigner, makeTestTls, waitFor } from '@guts-upgrade/simulator';
import { AGENT_DEB, buildPackages, buildSimulator, COORDINATOR_DEB, hideMachineNode, installSimRuntime, PRODUCT_VERSION } from '../src/package/install.js';

const ARTIFACT_PORT = 7700;
const COORD_PORT = 7600;
const HOSTS = ['v0', 'v1', 'v2', 'v3'];

const pf = await preflight();
const dpkg = await fs.access('/usr/bin/dpkg-deb').then(
  () => true,
  () => false,
);
if (!pf.ok) t.plan(0, pf.reason ?? 'testbed unavailable');
else if (!dpkg) t.plan(0, 'dpkg-deb is not installed (Debian package dpkg)');
else
  await t.test('install the packages and run a rollout with them', { timeout: 40 * 60_000 }, async (t) => {
    const build = await buildPackages();
    t.comment(`packages ready in ${(build.ms / 1000).toFixed(1)} s`);
    for (const f of [AGENT_DEB, COORDINATOR_DEB]) t.comment(`${path.basename(f)}: ${((await fs.stat(f)).size / 1048576).toFixed(1)} MiB`);

    const scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'gs-pkg-'));
    t.teardown(() => fs.rm(scratch, { recursive: true, force: true }));
    const sim = await buildSimulator(scratch, ['1.0.0', '1.1.0']);
    const lab = await startLab({ hosts: HOSTS, scratchDir: path.join(scratch, 'lab') });
    t.teardown(() => lab.teardown());
    lab.spawnInLab(
      process.execPath,
      [
        path.join(REPO_ROOT, 'packages/simulator/dist/src/artifact-server-cli.js'),
        path.join(scratch, 'artifacts'),
        '--host',
        lab.labAddr,
        '--port',
        String(ARTIFACT_PORT),
      ],
      {
        logFile: path.join(scratch, 'artifact-server.log'),
      },
    );
    // The release owner's repository (guts-upgrade release), published beside the builds; agents pin its root.
    const releases = createReleaseSigner(path.join(scratch, 'artifacts', 'release'));
    const [v0] = lab.hosts as [Host, ...Host[]];
    // tap's process tracking puts NODE_OPTIONS (an --import from the checkout) into every child's env.
    const sh = (h: Host, cmd: string, env: Record<string, string> = {}) =>
      h.exec('sh', ['-c', `unset NODE_OPTIONS; ${cmd}`], { timeoutMs: 10 * 60_000, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...env } });

    // --- each host: the packages in, every trace of a Node of the machine out.
    await Promise.all(
      lab.hosts.map(async (h) => {
        await h.copyIn(AGENT_DEB, `/var/cache/guts-test/${path.basename(AGENT_DEB)}`);
        if (h === v0) await h.copyIn(COORDINATOR_DEB, `/var/cache/guts-test/${path.basename(COORDINATOR_DEB)}`);
        await installSimRuntime(h, sim.main);
        const hidden = await hideMachineNode(h);
        if (h === v0) t.comment(`hidden in each host: ${hidden.join(' ')}`);
      }),
    );
    for (const h of lab.hosts) {
      const probe = await sh(h, `command -v node npm; test -e ${REPO_ROOT}/node_modules && echo checkout-visible; node --version`);
      t.equal(probe.stdout.trim(), '', `${h.name}: no node, npm or checkout is reachable`);
    }

    const installStart = Date.now();
    const inst = await sh(v0, 'dpkg -i /var/cache/guts-test/*.deb');
    t.equal(inst.code, 0, `v0: dpkg -i of both packages: ${inst.stderr}`);
    t.comment(`dpkg -i of both packages on v0: ${((Date.now() - installStart) / 1000).toFixed(1)} s`);
    await Promise.all(
      lab.hosts.slice(1).map(async (h) => {
        const r = await sh(h, 'dpkg -i /var/cache/guts-test/*.deb');
        t.equal(r.code, 0, `${h.name}: dpkg -i of the agent package: ${r.stderr}`);
      }),
    );

    // --- installed, nothing started: the example configs do not make a configured service.
    for (const unit of ['guts-upgrade-coordinator', 'guts-upgrade-agent']) {
      t.equal((await v0.systemctl('is-enabled', unit)).stdout.trim(), 'disabled', `${unit} is not enabled by the install`);
      t.equal((await v0.systemctl('is-active', unit)).stdout.trim(), 'inactive', `${unit} is not started by the install`);
    }
    t.match((await sh(v0, 'guts-upgrade --version')).stdout, PRODUCT_VERSION, 'guts-upgrade --version');
    t.match((await sh(v0, 'guts-upgrade-agent --version')).stdout, PRODUCT_VERSION, 'guts-upgrade-agent --version');
    t.match((await sh(v0, 'guts-upgrade-coordinator --version')).stdout, PRODUCT_VERSION, 'guts-upgrade-coordinator --version');
    const unconfigured = await sh(v0, 'guts-upgrade-agent config validate');
    t.equal(unconfigured.code, 2, `the example agent.yaml is refused until configured: ${unconfigured.stderr.trim()}`);
    const noOperator = await sh(v0, 'guts-upgrade-coordinator config validate --config /etc/guts-upgrade/coordinator.yaml');
    t.equal(noOperator.code, 2, `the example coordinator.yaml is refused until an operator is set: ${noOperator.stderr.trim()}`);
    const mode = await sh(v0, 'stat -c %a:%U:%G /etc/guts-upgrade/coordinator.yaml /etc/guts-upgrade/agent.yaml /var/lib/guts-upgrade');
    t.same(
      mode.stdout.trim().split('\n'),
      ['600:root:root', '600:root:root', '700:root:root'],
      'the configs holding secrets are root-only (the coordinator gets its copy as a credential); the agent state is root-only',
    );

    // --- guts-node 1.0.0 on every host (the simulator, with its own runtime).
    const genesis = Date.now();
    const validators = lab.hosts.map((h) => ({ name: h.name, pubkey: pubkeyFor(h.name), weight: 1, addr: `${h.addr}:${NODE_API_PORT}` }));
    const [from, to] = sim.artifacts as [(typeof sim.artifacts)[0], (typeof sim.artifacts)[0]];
    await Promise.all(
      lab.hosts.map((h) =>
        provisionGutsNode(h, {
          binary: from.path,
          config: `${JSON.stringify(
            {
              name: h.name,
              api_addr: `0.0.0.0:${NODE_API_PORT}`,
              p2p_addr: '0.0.0.0:9000',
              metrics_addr: '0.0.0.0:9090',
              data_dir: '/var/lib/guts/data',
              history_file: '/var/lib/guts/history.jsonl',
              log_level: 'info',
              log_format: 'json',
              genesis_time: genesis,
              validators,
              sim: FAST_TIMINGS,
            },
            null,
            2,
          )}\n`,
        }),
      ),
    );

    // --- the coordinator, configured with an operator token and started by systemctl.
    const token = randomBytes(24).toString('hex');
    await v0.writeFile(
      '/etc/guts-upgrade/coordinator.yaml',
      [
        `listen: { host: 0.0.0.0, port: ${COORD_PORT} }`,
        'operators:',
        `  - { name: ops, tokenSha256: ${createHash('sha256').update(token).digest('hex')}, role: operator }`,
        'heartbeat: { intervalMs: 1000, timeoutMs: 4000 }',
        `validators: ${HOSTS.length}`,
        'defaults: { maxUnavailable: 1, stabilizationMs: 1000, soakMs: 3000, syncDistance: 8, syncTimeoutMs: 60000 }',
        'tickMs: 200',
        '',
      ].join('\n'),
      0o600,
    );
    const valid = await sh(v0, 'guts-upgrade-coordinator config validate --config /etc/guts-upgrade/coordinator.yaml');
    t.equal(valid.code, 0, `coordinator config validates: ${valid.stderr}`);
    const started = await v0.systemctl('enable', '--now', 'guts-upgrade-coordinator');
    t.equal(started.code, 0, `systemctl enable --now guts-upgrade-coordinator: ${started.stderr}`);

    // --- TLS as docs/runbook.md writes it: a private CA (made here with openssl), the pair
    // root-only in /etc, the runbook's credentials drop-in run as written; agents dial wss://
    // with the CA as coordinator.caFile, and the CLI trusts it through NODE_EXTRA_CA_CERTS.
    const runbook = path.join(REPO_ROOT, 'docs/runbook.md');
    const testTls = makeTestTls(path.join(scratch, 'tls'), { dns: ['v0'] });
    for (const [from, to] of [
      [testTls.cert, '/etc/guts-upgrade/tls.crt'],
      [testTls.key, '/etc/guts-upgrade/tls.key'],
    ] as const)
      await v0.writeFile(to, await fs.readFile(from), 0o600);
    for (const h of lab.hosts) await h.writeFile('/etc/guts-upgrade/ca.crt', await fs.readFile(testTls.ca), 0o644);
    const [coordinatorTlsBlock] = sectionBlocks(runbook, 'TLS with a private CA');
    const tls = await sh(v0, coordinatorTlsBlock!);
    t.equal(tls.code, 0, `v0: the runbook's TLS drop-in for the coordinator: ${tls.stdout}${tls.stderr}`);
    const cli = (cmd: string) =>
      sh(v0, cmd, { GUTS_UPGRADE_TOKEN: token, GUTS_UPGRADE_URL: `https://v0:${COORD_PORT}`, NODE_EXTRA_CA_CERTS: '/etc/guts-upgrade/ca.crt' });
    await waitFor(
      async () => {
        const r = await cli('guts-upgrade nodes list');
        if (r.code === 0) return true;
        const state = (await v0.systemctl('is-active', 'guts-upgrade-coordinator')).stdout.trim();
        if (state === 'failed') throw new Error(`coordinator unit failed:\n${await v0.journal('guts-upgrade-coordinator', 30)}`);
        return undefined;
      },
      { what: 'the packaged coordinator answers', timeoutMs: 60_000, intervalMs: 500 },
    );
    // Its secrets reach it as a credential: it runs on the private copy, and its user cannot read /etc's file.
    const cmdline = await sh(v0, "tr '\\0' ' ' < /proc/$(systemctl show -p MainPID --value guts-upgrade-coordinator)/cmdline");
    t.match(
      cmdline.stdout,
      '--config /run/credentials/guts-upgrade-coordinator.service/coordinator.yaml',
      'v0: the coordinator reads its config from its credentials',
    );
    const peek = await sh(v0, 'runuser -u guts-upgrade-coordinator -- cat /etc/guts-upgrade/coordinator.yaml');
    t.not(peek.code, 0, "v0: the coordinator's user cannot read /etc/guts-upgrade/coordinator.yaml");

    // --- every node registered with the CLI; each agent gets its token in a 0600 file.
    for (const h of lab.hosts) {
      const r = await cli(`guts-upgrade nodes add ${h.name} --address ${h.addr}`);
      t.equal(r.code, 0, `guts-upgrade nodes add ${h.name}: ${r.stderr}`);
      const agentToken = /^token: (\S+)$/m.exec(r.stdout)?.[1];
      if (!agentToken) throw new Error(`no token in: ${r.stdout}`);
      await h.writeFile('/etc/guts-upgrade/agent.token', `${agentToken}\n`, 0o600);
      await h.writeFile('/etc/guts-upgrade/root.json', await fs.readFile(releases.root, 'utf8'), 0o644);
      await h.writeFile(
        '/etc/guts-upgrade/agent.yaml',
        `${JSON.stringify(
          {
            nodeId: h.name,
            validatorPubkey: pubkeyFor(h.name),
            coordinator: {
              url: `wss://v0:${COORD_PORT}`,
              caFile: '/etc/guts-upgrade/ca.crt',
              tokenFile: '/etc/guts-upgrade/agent.token',
              reconnectMaxMs: 2000,
            },
            service: { driver: 'systemd', name: 'guts-node', stopTimeoutMs: 20_000 },
            node: {
              binary: '/usr/local/bin/guts-node',
              dataDir: '/var/lib/guts/data',
              config: '/etc/guts/config.yaml',
              apiUrl: `http://127.0.0.1:${NODE_API_PORT}`,
              metricsUrl: 'http://127.0.0.1:9090/metrics',
            },
            stateDir: '/var/lib/guts-upgrade',
            backup: { retention: 2 },
            release: { repository: `http://lab:${ARTIFACT_PORT}/release`, root: '/etc/guts-upgrade/root.json' },
            fetch: { retries: 3, backoffMs: 200, timeoutMs: 15_000 },
            checks: {
              readyTimeoutMs: 15_000,
              syncTimeoutMs: 30_000,
              syncDistance: 8,
              advanceWindowMs: 1500,
              stabilizeMs: 1500,
              httpTimeoutMs: 2000,
              commandTimeoutMs: 60_000,
            },
            diskMarginBytes: 0,
          },
          null,
          2,
        )}\n`,
        0o600,
      );
      const v = await sh(h, 'guts-upgrade-agent config validate');
      t.equal(v.code, 0, `${h.name}: guts-upgrade-agent config validate: ${v.stderr}`);
      const s = await h.systemctl('enable', '--now', 'guts-upgrade-agent');
      t.equal(s.code, 0, `${h.name}: systemctl enable --now guts-upgrade-agent: ${s.stderr}`);
    }

    // --- the fleet as the CLI sees it: four agents connected, every node healthy on 1.0.0.
    type NodeRow = { id: string; connected: boolean; healthy: boolean; version: string | null };
    const nodes = async (): Promise<NodeRow[]> => {
      const r = await cli('guts-upgrade nodes list --json');
      return r.code === 0 ? (JSON.parse(r.stdout) as { nodes: NodeRow[] }).nodes : [];
    };
    await waitFor(
      async () => {
        const ns = await nodes();
        return ns.length === HOSTS.length && ns.every((n) => n.connected && n.healthy && n.version === '1.0.0') ? true : undefined;
      },
      { what: 'four packaged agents connected, nodes healthy on 1.0.0', timeoutMs: 120_000, intervalMs: 1000 },
    ).catch(async (err: Error) => {
      const diag = await Promise.all(lab.hosts.map(async (h) => `--- ${h.name}\n${await h.journal('guts-upgrade-agent', 80)}`));
      throw new Error(`${err.message}\n${JSON.stringify(await nodes())}\n${diag.join('\n')}`);
    });
    t.pass('four agents from the package connected to the packaged coordinator');

    // --- plan, start and watch the rollout with the documented commands only.
    // The release owner signs 1.1.0; the rollout names the version alone and each agent resolves it.
    releases.sign(to.path, '1.1.0');
    const plan = await cli('guts-upgrade plan --to 1.1.0 --strategy rolling');
    t.equal(plan.code, 0, `guts-upgrade plan: ${plan.stderr}`);
    t.comment(plan.stdout.trim());
    const rolloutStart = Date.now();
    const start = await cli('guts-upgrade rollout start --to 1.1.0 --strategy rolling');
    t.equal(start.code, 0, `guts-upgrade rollout start: ${start.stderr}`);
    const id = /^started (\S+)$/m.exec(start.stdout)?.[1];
    if (!id) throw new Error(`no rollout id in: ${start.stdout}`);
    const watch = await cli(`guts-upgrade rollout watch ${id}`);
    t.equal(watch.code, 0, `guts-upgrade rollout watch ${id} exits 0 once the rollout completed:\n${watch.stdout.slice(-2000)}${watch.stderr}`);
    t.comment(`rollout ${id}: ${((Date.now() - rolloutStart) / 1000).toFixed(1)} s`);
    // What the rollout waited for, if anything (informational: why a run took longer than another).
    for (const l of watch.stdout.split('\n').filter((l) => / waiting: /.test(l))) t.comment(l.trim());
    const status = await cli(`guts-upgrade rollout status ${id}`);
    t.equal(status.code, 0, `guts-upgrade rollout status ${id}`);
    t.match(status.stdout, /completed/, 'the rollout completed');

    await waitFor(
      async () => {
        const ns = await nodes();
        return ns.length === HOSTS.length && ns.every((n) => n.version === '1.1.0') ? true : undefined;
      },
      { what: 'every node reports 1.1.0', timeoutMs: 60_000, intervalMs: 1000 },
    );
    for (const h of lab.hosts) {
      const v = await sh(h, '/usr/local/bin/guts-node --version');
      t.match(v.stdout, '1.1.0', `${h.name}: the installed guts-node is 1.1.0`);
    }

    // --- docs/runbook.md, run as written on the hosts it is for.
    // The coordinator's database: an online backup on its host, while it runs.
    const [backupBlock] = sectionBlocks(runbook, "The coordinator's database");
    const bk = await sh(v0, backupBlock!);
    t.equal(bk.code, 0, `v0: the runbook's backup command: ${bk.stderr}`);
    const copy = (await sh(v0, 'ls /var/backups/guts-upgrade-coordinator-*.db')).stdout.trim().split('\n')[0]!;
    const inCopy = await sh(v0, `sqlite3 ${copy} "SELECT state FROM rollouts WHERE id = '${id}'"`);
    t.equal(inCopy.stdout.trim(), 'completed', `v0: the copy ${copy} holds the completed rollout`);
    // The CLI's own flag for a private CA, and plain http is not served any more.
    const withFlag = await sh(v0, 'guts-upgrade --cacert /etc/guts-upgrade/ca.crt nodes list', {
      GUTS_UPGRADE_TOKEN: token,
      GUTS_UPGRADE_URL: `https://v0:${COORD_PORT}`,
    });
    t.equal(withFlag.code, 0, `v0: guts-upgrade --cacert /etc/guts-upgrade/ca.crt nodes list: ${withFlag.stderr}`);
    const untrusted = await sh(v0, 'guts-upgrade nodes list', { GUTS_UPGRADE_TOKEN: token, GUTS_UPGRADE_URL: `https://v0:${COORD_PORT}` });
    t.not(untrusted.code, 0, 'v0: without the CA the CLI refuses the certificate');
    const plain = await sh(v0, 'guts-upgrade nodes list', { GUTS_UPGRADE_TOKEN: token, GUTS_UPGRADE_URL: `http://v0:${COORD_PORT}` });
    t.not(plain.code, 0, 'v0: plain http is not served');

    // --- removing the agent package stops its service and keeps its state.
    const v3 = lab.host('v3');
    const rm = await sh(v3, 'dpkg -r guts-upgrade-agent');
    t.equal(rm.code, 0, `v3: dpkg -r guts-upgrade-agent: ${rm.stderr}`);
    t.not((await v3.systemctl('is-active', 'guts-upgrade-agent')).stdout.trim(), 'active', 'v3: the agent is stopped on removal');
    t.equal((await sh(v3, 'test -f /var/lib/guts-upgrade/journal.sqlite && echo kept')).stdout.trim(), 'kept', 'v3: the agent journal is kept');
    t.not((await sh(v3, 'command -v guts-upgrade-agent')).code, 0, 'v3: guts-upgrade-agent is gone from PATH');
  });
