/**
 * `guts-upgrade-agent doctor`: the upgrade procedure's troubleshooting checks, run on
 * the host in the order an operator would (service won't start → data corruption →
 * consensus → sync), each finding with the next command to run. Read-only: it starts,
 * stops and changes nothing (the configured `commands.verify`, when set, only reads).
 */
import fs from 'node:fs';
import type { AgentConfig } from './config.js';
import { fillArgv } from './config.js';
import type { Journal } from './journal.js';
import type { BackupStore } from './backup-store.js';
import type { NodeClient } from './node-client.js';
import type { ServiceDriver } from './service/driver.js';
import { overridePath } from './service/compose-override.js';
import { binaryVersion } from './steps/preflight.js';
import { hasTrustedRoot } from './trust-policy.js';
import { dirSize, freeBytes, runArgv, sleep } from './util.js';

export type Verdict = 'ok' | 'warn' | 'fail' | 'skip';

export interface Finding {
  check: string;
  verdict: Verdict;
  detail: string;
  /** Commands to run next, most useful first. */
  next: string[];
}

export interface DoctorDeps {
  config: AgentConfig;
  driver: ServiceDriver;
  node: NodeClient;
  journal: Journal;
  backups: BackupStore;
}

type Check = (d: DoctorDeps) => Promise<Finding>;

const finding = (check: string, verdict: Verdict, detail: string, next: string[] = []): Finding => ({ check, verdict, detail, next });

/** Where the node's own log is read, per driver. */
function logCommands(c: AgentConfig): string[] {
  switch (c.service.driver) {
    case 'systemd':
      return [`systemctl status ${c.service.name} --no-pager`, `journalctl -u ${c.service.name} -n 100 --no-pager`];
    case 'process':
      return [`tail -n 100 ${c.service.logFile}`];
    case 'docker':
      return [`docker logs --tail 100 ${c.service.container}`, `docker inspect ${c.service.container}`];
    case 'compose':
      return [`docker-compose -f ${c.service.file} -f ${overridePath(c)} logs --tail 100 ${c.service.service}`];
  }
}

/** What is installed: the binary's --version, or on a container host the image its container runs. */
async function installedVersion(d: DoctorDeps): Promise<{ what: string; version: string | null; output: string }> {
  const c = d.config;
  if (!d.driver.images) return { what: c.node.binary, ...(await binaryVersion(c.node.binary, c.checks.httpTimeoutMs * 10)) };
  try {
    const cur = await d.driver.images.current();
    return { what: `image ${cur.imageId}`, version: cur.version, output: cur.output };
  } catch (err) {
    return {
      what: `the image of ${c.service.driver === 'docker' ? `container ${c.service.container}` : `service ${c.service.service}`}`,
      version: null,
      output: (err as Error).message,
    };
  }
}

const service: Check = async ({ config, driver, node }) => {
  const exists = await driver.exists();
  if (!exists.ok) return finding('service', 'fail', exists.detail, [...logCommands(config), 'guts-upgrade-agent config validate']);
  if (await driver.isActive()) return finding('service', 'ok', `${config.service.name} is running (${config.service.driver} driver)`);
  const running = await node.runningVersion();
  if (running !== null) {
    // Someone else's node: an upgrade would stop nothing and the new build would not bind (E_FOREIGN_NODE).
    const port = new URL(config.node.apiUrl).port || '80';
    return finding(
      'service',
      'fail',
      `${config.service.name} is not running, yet guts-node ${running} answers on ${config.node.apiUrl}: it was started outside the agent`,
      [`ss -ltnp 'sport = :${port}'    # which process holds the API port`, 'stop that process, then start the node the agent manages', ...logCommands(config)],
    );
  }
  const tail = (await driver.logTail(10)).join('\n    ');
  return finding('service', 'fail', `${config.service.name} is not running${tail ? `; its last log lines:\n    ${tail}` : ''}`, [
    ...logCommands(config),
    'guts-upgrade-agent rollback    # if it stopped starting after an upgrade',
  ]);
};

const interrupted: Check = async ({ journal }) => {
  const holder = journal.lockHolder();
  if (!holder) return finding('interrupted command', 'ok', 'no command holds the journal lock; no migration is half done');
  if (holder.alive)
    return finding('interrupted command', 'warn', `command ${holder.commandId} runs now (pid ${holder.pid}); what follows may change under it`, [
      'guts-upgrade-agent status',
    ]);
  return finding(
    'interrupted command',
    'fail',
    `command ${holder.commandId} was interrupted (pid ${holder.pid} is gone since ${holder.acquiredAt}); a migration may be half done`,
    ['guts-upgrade-agent recover'],
  );
};

const binary: Check = async (d) => {
  const { config } = d;
  if (d.driver.images) {
    const v = await installedVersion(d);
    if (!v.version)
      return finding('binary', 'fail', `${v.what}: --version did not print a version: ${JSON.stringify(v.output.slice(0, 200))}`, logCommands(config));
    return finding('binary', 'ok', `${v.what} is guts-node ${v.version}`);
  }
  if (!fs.existsSync(config.node.binary))
    return finding('binary', 'fail', `${config.node.binary} does not exist`, ['guts-upgrade-agent backup list', 'guts-upgrade-agent rollback']);
  const v = await binaryVersion(config.node.binary, config.checks.httpTimeoutMs * 10);
  if (!v.version)
    return finding('binary', 'fail', `${config.node.binary} --version did not print a version: ${JSON.stringify(v.output.slice(0, 200))}`, [
      `${config.node.binary} --version`,
      'guts-upgrade-agent rollback',
    ]);
  return finding('binary', 'ok', `${config.node.binary} is guts-node ${v.version}`);
};

const health: Check = async (d) => {
  const { config, node } = d;
  const h = await node.health();
  if (!h)
    return finding('health', 'fail', `the node's API at ${config.node.apiUrl} does not answer`, [
      `curl -s ${config.node.apiUrl}/health`,
      ...logCommands(config),
    ]);
  const running = typeof h.body?.version === 'string' ? h.body.version : '?';
  const installed = (await installedVersion(d)).version;
  const checks = JSON.stringify(h.body?.checks ?? {});
  if (h.status !== 200)
    return finding('health', 'fail', `/health answers ${h.status}: ${checks}`, [`curl -s ${config.node.apiUrl}/health`, ...logCommands(config)]);
  if (installed && running !== installed) {
    return finding('health', 'warn', `up, but the node runs ${running} while the binary on disk is ${installed}: it was not restarted after a swap`, [
      'guts-upgrade-agent status',
    ]);
  }
  return finding('health', 'ok', `up, running ${running}`);
};

const data: Check = async ({ config }) => {
  if (!config.commands.verify) return finding('data', 'skip', 'no data check configured (commands.verify in the agent configuration)');
  const argv = fillArgv(config.commands.verify, { binary: config.node.binary, dataDir: config.node.dataDir, config: config.node.config, from: '', to: '' });
  const r = await runArgv(argv, { timeoutMs: config.checks.commandTimeoutMs });
  if (r.code === 0) return finding('data', 'ok', `${argv.join(' ')} passed`);
  const said = (r.stderr || r.stdout).trim().split('\n').slice(-3).join(' / ');
  return finding('data', 'fail', `${argv.join(' ')} exited ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''}: ${said}`, [
    'guts-upgrade-agent backup list',
    'guts-upgrade-agent backup restore <id>    # the newest complete backup of a good version',
  ]);
};

const consensus: Check = async ({ config, node }) => {
  const c = await node.consensus();
  if (!c)
    return finding('consensus', 'fail', `${config.node.apiUrl}/api/consensus/status does not answer`, [
      `curl -s ${config.node.apiUrl}/api/consensus/status`,
      ...logCommands(config),
    ]);
  if (!c.enabled) return finding('consensus', 'warn', 'consensus is disabled on this node', [`grep -n consensus ${config.node.config}`]);
  return finding(
    'consensus',
    'ok',
    `state ${c.state}, view ${c.view ?? '?'}, finalized height ${c.finalized_height ?? '?'}, leader ${c.current_leader ?? 'unknown'}${c.is_leader ? ' (this node)' : ''}`,
  );
};

/**
 * The node's own finalized height must move within the agent's advance window; how far
 * it is behind the other validators only the coordinator sees (`guts-upgrade fleet`).
 */
const sync: Check = async ({ config, node }) => {
  const first = (await node.consensus())?.finalized_height ?? null;
  if (first === null) return finding('sync', 'skip', 'no finalized height to follow (see consensus)');
  const end = Date.now() + config.checks.advanceWindowMs;
  let last: number = first;
  while (Date.now() < end) {
    await sleep(Math.min(500, config.checks.advanceWindowMs));
    last = (await node.consensus())?.finalized_height ?? last;
    if (last > first) return finding('sync', 'ok', `finalized height moves: ${first} -> ${last}`);
  }
  return finding('sync', 'fail', `finalized height stuck at ${first} for ${config.checks.advanceWindowMs} ms: this node is not following the chain`, [
    `curl -s ${config.node.apiUrl}/api/consensus/status`,
    "guts-upgrade fleet    # on the coordinator host: the other validators' heights",
    ...logCommands(config),
  ]);
};

/** Peers as the node reports them; today's guts-node never reports p2p, which is said, not guessed. */
const peers: Check = async ({ config, node }) => {
  const p2p = (await node.health())?.body?.checks as Record<string, { status?: string; details?: { peer_count?: unknown } }> | undefined;
  const comp = p2p?.p2p;
  if (comp?.status !== 'up') return finding('peers', 'skip', `not reported by the node (p2p ${comp?.status ?? 'absent'})`);
  const n = typeof comp.details?.peer_count === 'number' ? comp.details.peer_count : null;
  if (n === null) return finding('peers', 'skip', 'p2p is up but the node gives no peer count');
  if (n < config.checks.minPeers)
    return finding('peers', 'warn', `${n} peers connected, fewer than checks.minPeers ${config.checks.minPeers}`, [
      `grep -n -i -A3 p2p ${config.node.config}`,
      ...logCommands(config),
    ]);
  return finding('peers', 'ok', `${n} peers connected`);
};

const disk: Check = async ({ config }) => {
  const need = dirSize(config.node.dataDir) + config.diskMarginBytes;
  const free = await freeBytes(config.backup.dir);
  const mb = (b: number) => `${Math.round(b / 1048576)} MiB`;
  if (free < need)
    return finding('disk', 'fail', `${mb(free)} free for backups in ${config.backup.dir}; the next upgrade's backup needs about ${mb(need)}`, [
      `df -h ${config.backup.dir}`,
      'guts-upgrade-agent backup list',
    ]);
  return finding('disk', 'ok', `${mb(free)} free for backups (the next needs about ${mb(need)})`);
};

const backups: Check = async ({ backups }) => {
  const done = backups
    .list()
    .filter((b) => b.status === 'complete')
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  const newest = done.at(-1);
  if (!newest) return finding('backups', 'warn', 'no complete backup on this host', ['guts-upgrade-agent backup create']);
  return finding('backups', 'ok', `${done.length} complete; newest ${newest.id} (${newest.createdAt}, version ${newest.version ?? '?'})`);
};

/** In the procedure's troubleshooting order. */
/** Where upgrades may come from (trust-policy.ts): a host that can take no release, or any, is worth a word before a rollout. */
const releases: Check = async ({ config }) => {
  if (hasTrustedRoot(config)) return finding('releases', 'ok', `releases signed in ${config.release.repository}, root pinned at ${config.release.root}`);
  const setUp = 'set release.repository and release.root in the agent configuration (docs/runbook.md, Releases described by The Update Framework)';
  if (config.allowUnsigned) return finding('releases', 'warn', 'allowUnsigned: any binary a command names by url and sha256 is installed, as root', [setUp]);
  return finding('releases', 'fail', 'no trusted root and allowUnsigned is off: every prepare and upgrade is refused (E_UNSIGNED_REFUSED)', [setUp]);
};

export const CHECKS: Check[] = [service, interrupted, binary, health, data, consensus, sync, peers, disk, backups, releases];

export async function runDoctor(deps: DoctorDeps): Promise<Finding[]> {
  const out: Finding[] = [];
  for (const check of CHECKS) out.push(await check(deps));
  return out;
}

const LABEL: Record<Verdict, string> = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL', skip: 'skip' };

export function renderFindings(findings: Finding[]): string {
  const lines: string[] = [];
  for (const f of findings) {
    lines.push(`${LABEL[f.verdict]}  ${f.check}: ${f.detail}`);
    for (const n of f.next) lines.push(`      next: ${n}`);
  }
  const fails = findings.filter((f) => f.verdict === 'fail').length;
  const warns = findings.filter((f) => f.verdict === 'warn').length;
  lines.push(fails || warns ? `${fails} failing, ${warns} to look at` : 'no problem found');
  return lines.join('\n');
}
