/**
 * A lab of simulated validator hosts, each a set of namespaces running its own
 * real systemd, wired to a private bridge in the lab's own network namespace.
 *
 *   root ns (the test)                       lab netns gutslab-<pid>-<rnd>
 *   ──────────────────                       ─────────────────────────────
 *   lab.forward(port) 127.0.0.1:N  ──unix──▶  forwarder ──▶ 198.18.0.x:port
 *   lab.spawnInLab('node', [coordinator])     coordinator on 198.18.0.1
 *                                             br0 198.18.0.1/24
 *                                              ├─ vh-v0 ══ eth0 198.18.0.11  host v0 (systemd = PID 1)
 *                                              └─ vh-v1 ══ eth0 198.18.0.12  host v1
 *
 * Nothing is added to the machine's own network namespace: the veth pairs go
 * from the lab netns straight into each host's netns, and vanish with them.
 * Everything is named gutslab-<owner pid>-<random> so a later run can find and
 * remove what a crashed run left (cleanupStale) and tests can assert that
 * nothing is left (leftovers).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BOOT_SCRIPT, MASKED_UNITS } from './boot-script.js';
import { cgroupDir, cgroupPids, detectCgroups, findCgroups, makeCgroup, removeCgroupTree, type CgroupLayout } from './cgroups.js';
import { waitFor } from '@guts-upgrade/simulator';
import { run, runOk, sleep, type RunOptions, type RunResult } from './proc.js';

export { run, runOk, sleep, type RunResult, type RunOptions } from './proc.js';

export const PREFIX = 'gutslab-';

/** The repository root (this file compiles to test/dist/src/testbed/lab.js). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
export const SYSTEMD_DIR = path.join(REPO_ROOT, 'systemd');

export interface LabOptions {
  /** Host names: lowercase letters, digits and '-', at most 12 chars, starting with a letter. */
  hosts: string[];
  /** A directory of the test's own (e.g. from fs.mkdtemp); the lab keeps sockets, scripts and logs there. Keep it short: unix socket paths max 107 bytes. */
  scratchDir: string;
  /** IPv4 /24 for the lab bridge; default 198.18.0.0/24 (RFC 2544 benchmarking range). Each lab has its own netns, so concurrent labs may use the same subnet. */
  subnet?: string;
  /** Per-host tmpfs size limit (default '2g'; only pages actually written cost memory). */
  tmpfsSize?: string;
  /** System users created in every host before boot (default ['guts']). */
  users?: string[];
  /** Extra units to mask in every host. */
  mask?: string[];
  /** How long to wait for every host to finish booting (default 120 s). */
  bootTimeoutMs?: number;
  /**
   * Directories of the machine every host sees read-only at the same path
   * (default: the checkout, REPO_ROOT). Each host gets a fresh /tmp, /var/tmp
   * and /run, so a checkout there is only visible through this.
   */
  share?: string[];
}

export interface ExecOptions extends RunOptions {
  /** Throw when the command exits non-zero. */
  check?: boolean;
}

export interface Host {
  readonly name: string;
  /** PID of the host's systemd (its PID 1), as seen from the root namespace. */
  readonly pid: number;
  /** The host's address on the lab bridge. */
  readonly addr: string;
  /** Runs a command inside all of the host's namespaces (nsenter -a). */
  exec(cmd: string, args?: readonly string[], opts?: ExecOptions): Promise<RunResult>;
  /** `systemctl ...` inside the host (does not throw; check .code). */
  systemctl(...args: string[]): Promise<RunResult>;
  /** The last `lines` journal lines of a unit (journalctl -u unit -o short-iso). */
  journal(unit: string, lines?: number): Promise<string>;
  /** Path through which the root namespace sees the host's file `p` (/proc/<pid>/root/p). */
  rootPath(p: string): string;
  /** Writes a file inside the host (parents created, root-owned unless owner given as 'user[:group]'). */
  writeFile(p: string, content: string | Buffer, mode?: number, owner?: string): Promise<void>;
  readFile(p: string): Promise<string>;
  /** Copies a file of the machine into the host. */
  copyIn(src: string, dest: string, mode?: number, owner?: string): Promise<void>;
  /** Installs a unit file (a basename looked up in the project's systemd/ dir, or a path) into /etc/systemd/system and reloads. */
  installUnit(file: string, opts?: { enable?: boolean; start?: boolean }): Promise<void>;
  /** Waits until `systemctl is-active unit` prints `state` (default 'active'). */
  waitForUnit(unit: string, state?: string, timeoutMs?: number): Promise<void>;
  /** `systemctl is-system-running` plus the failed units, for diagnostics. */
  systemState(): Promise<{ state: string; failed: string[] }>;
}

export interface Forward {
  /** 127.0.0.1:port in the root namespace reaches target inside the lab. */
  host: '127.0.0.1';
  port: number;
  /** The same target as a unix socket in the scratch dir (e.g. for http.request({socketPath})). */
  socketPath: string;
  close(): Promise<void>;
}

export interface Lab {
  readonly id: string;
  /** Name of the lab's network namespace (ip netns exec <netns> ... works for debugging). */
  readonly netns: string;
  /** The lab bridge's address (where spawnInLab processes such as the coordinator listen). */
  readonly labAddr: string;
  readonly hosts: readonly Host[];
  readonly scratchDir: string;
  host(name: string): Host;
  /** Runs a command to completion inside the lab netns (root filesystem, root ns otherwise). */
  runInLab(cmd: string, args?: readonly string[], opts?: ExecOptions): Promise<RunResult>;
  /** Starts a long-running process inside the lab netns; it is killed at teardown. Output goes to logFile (default <scratch>/logs/lab-<n>-<cmd>.log). */
  spawnInLab(cmd: string, args?: readonly string[], opts?: { env?: NodeJS.ProcessEnv; cwd?: string; logFile?: string }): ChildProcess;
  /** Makes addr:port inside the lab (default the lab address) reachable from the test at 127.0.0.1. */
  forward(port: number, addr?: string): Promise<Forward>;
  /** Cuts a host off the bridge (its lab-side link goes down). */
  partition(host: string): Promise<void>;
  heal(host: string): Promise<void>;
  /** tc netem on both ends of a host's link. Throws with a clear reason where the kernel lacks sch_netem (it does on the current VMs). */
  netem(host: string, spec: string): Promise<void>;
  clearNetem(host: string): Promise<void>;
  /** Kills every host and lab process, removes cgroups and the netns. Idempotent. */
  teardown(): Promise<void>;
}

const HOST_RE = /^[a-z][a-z0-9-]{0,11}$/;

// ---------------------------------------------------------------------------
// preflight

export interface Preflight {
  ok: boolean;
  /** Why the testbed cannot run here (for t.skip). */
  reason?: string;
  cgroups?: CgroupLayout;
  /** Optional features. */
  netem: boolean;
}

let cachedPreflight: Promise<Preflight> | undefined;

/** Checks that this machine can run labs: root, tools, systemd, cgroups, overlayfs, namespaces. */
export function preflight(): Promise<Preflight> {
  cachedPreflight ??= doPreflight();
  return cachedPreflight;
}

async function doPreflight(): Promise<Preflight> {
  const fail = (reason: string): Preflight => ({ ok: false, reason: `testbed cannot run: ${reason}`, netem: false });
  if (process.platform !== 'linux') return fail(`needs Linux, this is ${process.platform}`);
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return fail('needs root (namespaces, mounts, cgroups)');
  for (const tool of ['unshare', 'nsenter', 'ip', 'tc', 'mount', 'umount', 'pivot_root', 'useradd', 'chroot', 'bash']) {
    const r = await run('sh', ['-c', `command -v ${tool}`]);
    if (r.code !== 0) return fail(`tool ${tool} not found in PATH`);
  }
  if (!existsSync('/lib/systemd/systemd')) return fail('/lib/systemd/systemd not installed');
  if (!existsSync('/usr/bin/systemctl')) return fail('/usr/bin/systemctl not installed');
  const filesystems = readFileSync('/proc/filesystems', 'utf8');
  for (const fsType of ['overlay', 'tmpfs', 'cgroup2']) {
    if (!new RegExp(`\\s${fsType}\\n`).test(filesystems)) return fail(`kernel lacks ${fsType} filesystem`);
  }
  let cg: CgroupLayout;
  try {
    cg = detectCgroups();
  } catch (err) {
    return fail(`cannot read cgroup layout: ${String(err)}`);
  }
  if (cg.mode === 'hybrid') {
    if (!cg.hierarchies.some((h) => h.key === 'name=systemd')) return fail('cgroup v1 without a name=systemd hierarchy at /sys/fs/cgroup/systemd');
    if (!cg.hierarchies.some((h) => h.version === 2)) return fail('no cgroup2 mounted at /sys/fs/cgroup/unified');
  }
  if (cg.hierarchies.length === 0) return fail('no cgroup hierarchies mounted under /sys/fs/cgroup');
  for (const ns of ['pid', 'mnt', 'net', 'uts', 'ipc', 'cgroup']) {
    if (!existsSync(`/proc/self/ns/${ns}`)) return fail(`kernel lacks ${ns} namespaces`);
  }
  // netem is optional: probe it in a throwaway netns.
  const probe = `${PREFIX}probe-${process.pid}`;
  let netem = false;
  if ((await run('ip', ['netns', 'add', probe])).code === 0) {
    await run('ip', ['-n', probe, 'link', 'set', 'dev', 'lo', 'up']);
    netem = (await run('tc', ['-n', probe, 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'delay', '1ms'])).code === 0;
    await run('ip', ['netns', 'del', probe]);
  } else {
    return fail('ip netns add failed (network namespaces unavailable)');
  }
  return { ok: true, cgroups: cg, netem };
}

// ---------------------------------------------------------------------------
// naming, stale cleanup and leftovers

function ownerOf(id: string): number | undefined {
  const m = /^gutslab-(\d+)-[0-9a-f]+$/.exec(id);
  return m ? Number(m[1]) : undefined;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface Leftovers {
  processes: string[];
  mounts: string[];
  cgroups: string[];
  netns: string[];
  links: string[];
}

async function listNetns(): Promise<string[]> {
  try {
    return (await fs.readdir('/run/netns')).filter((n) => n.startsWith(PREFIX));
  } catch {
    return [];
  }
}

/** Lab ids (gutslab-<pid>-<rnd>) that exist as a netns or cgroup. */
async function existingLabIds(layout: CgroupLayout): Promise<Set<string>> {
  const ids = new Set<string>();
  for (const n of await listNetns()) if (ownerOf(n) !== undefined) ids.add(n);
  for (const d of await findCgroups(layout, PREFIX)) {
    const b = path.basename(d);
    if (ownerOf(b) !== undefined) ids.add(b);
  }
  return ids;
}

/**
 * What is left on the machine of lab `labId`, or (without an id) of every lab
 * whose owning process is gone. Labs of live processes (another test running
 * in parallel) are not leftovers.
 */
export async function leftovers(labId?: string): Promise<Leftovers> {
  const layout = detectCgroups();
  const match = (id: string): boolean => (labId !== undefined ? id === labId : !alive(ownerOf(id) ?? 0));
  const out: Leftovers = { processes: [], mounts: [], cgroups: [], netns: [], links: [] };
  const idIn = (s: string): string | undefined => /gutslab-\d+-[0-9a-f]+/.exec(s)?.[0];

  for (const n of await listNetns()) {
    const id = idIn(n);
    if (id && match(id)) out.netns.push(n);
  }
  for (const d of await findCgroups(layout, PREFIX)) {
    const id = idIn(path.basename(d));
    if (id && match(id)) out.cgroups.push(d);
  }
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const id = idIn(line);
    if (id && match(id)) out.mounts.push(line);
  }
  for (const p of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    let cg: string;
    try {
      cg = await fs.readFile(`/proc/${p}/cgroup`, 'utf8');
    } catch {
      continue;
    }
    const id = idIn(cg);
    if (id && match(id)) {
      // A zombie holds nothing; its parent (or init) reaps it.
      const stat = await fs.readFile(`/proc/${p}/stat`, 'utf8').catch(() => '');
      if (/^\d+ \(.*\) Z /s.test(stat)) continue;
      let cmd = '';
      try {
        cmd = (await fs.readFile(`/proc/${p}/cmdline`, 'utf8')).split('\0').join(' ').trim();
      } catch {
        /* exited */
      }
      out.processes.push(`${p} ${cmd}`);
    }
  }
  // The lab never creates links in the root netns; anything named like ours there is a bug.
  const links = await run('ip', ['-o', 'link', 'show']);
  for (const l of links.stdout.split('\n')) {
    const name = /^\d+: ([^:@]+)/.exec(l)?.[1];
    if (name && (name.startsWith('vh-') || name.startsWith(PREFIX))) out.links.push(name);
  }
  return out;
}

export function isClean(l: Leftovers): boolean {
  return Object.values(l).every((v: string[]) => v.length === 0);
}

async function destroyLab(id: string, layout: CgroupLayout): Promise<string[]> {
  const problems: string[] = [];
  const roots = layout.hierarchies.map((h) => cgroupDir(h, id));
  // Kill each host's PID 1 first (takes its whole PID namespace with it), then anything else.
  for (let round = 0; round < 50; round++) {
    const pids = new Set<number>();
    for (const r of roots) for (const p of await cgroupPids(r)) pids.add(p);
    if (pids.size === 0) break;
    for (const p of pids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    await sleep(round < 5 ? 20 : 100);
  }
  for (const r of roots) problems.push(...(await removeCgroupTree(r)));
  // Stale labs of other processes may sit under a different self path (another memory cgroup).
  for (const d of await findCgroups(layout, id)) problems.push(...(await removeCgroupTree(d)));
  if ((await listNetns()).includes(id)) {
    const r = await run('ip', ['netns', 'del', id]);
    if (r.code !== 0) problems.push(`ip netns del ${id}: ${r.stderr.trim()}`);
  }
  return problems;
}

/** Removes everything of labs whose owner process is gone. Returns the ids removed. */
export async function cleanupStale(): Promise<string[]> {
  const layout = detectCgroups();
  const removed: string[] = [];
  for (const id of await existingLabIds(layout)) {
    const owner = ownerOf(id);
    if (owner === undefined || alive(owner)) continue;
    await destroyLab(id, layout);
    removed.push(id);
  }
  return removed;
}

// ---------------------------------------------------------------------------
// the lab

function subnetAddrs(subnet: string): { base: string; labAddr: string; prefix: number; hostAddr: (i: number) => string } {
  const m = /^(\d+)\.(\d+)\.(\d+)\.0\/24$/.exec(subnet);
  if (!m) throw new Error(`subnet must be an IPv4 /24 like 198.18.0.0/24, got ${subnet}`);
  const base = `${m[1]}.${m[2]}.${m[3]}`;
  return { base, labAddr: `${base}.1`, prefix: 24, hostAddr: (i) => `${base}.${11 + i}` };
}

function hostEnvPath(): string {
  return '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
}

/** Boots the lab: one call, all hosts in parallel. On any failure everything started so far is torn down. */
export async function startLab(opts: LabOptions): Promise<Lab> {
  const pf = await preflight();
  if (!pf.ok) throw new Error(pf.reason);
  if (opts.hosts.length === 0) throw new Error('startLab: hosts must not be empty');
  if (opts.hosts.length > 200) throw new Error('startLab: at most 200 hosts');
  const seen = new Set<string>();
  for (const h of opts.hosts) {
    if (!HOST_RE.test(h)) throw new Error(`startLab: bad host name ${JSON.stringify(h)} (want ${HOST_RE})`);
    if (seen.has(h)) throw new Error(`startLab: duplicate host ${h}`);
    if (h === 'lab' || h === 'localhost') throw new Error(`startLab: host name ${h} is reserved (/etc/hosts)`);
    seen.add(h);
  }
  const net = subnetAddrs(opts.subnet ?? '198.18.0.0/24');
  await cleanupStale();
  const lab = new LabImpl(opts, net, detectCgroups(), pf.netem);
  liveLabs.add(lab);
  installExitHook();
  try {
    await lab.boot();
  } catch (err) {
    await lab.teardown().catch(() => {});
    throw err;
  }
  return lab;
}

const liveLabs = new Set<LabImpl>();
let exitHookInstalled = false;

/**
 * If the test process dies without teardown (uncaught error, tap's SIGTERM on
 * timeout), kill the hosts' PID 1s synchronously so no systemd outlives it;
 * cgroups and the netns are then removed by the next startLab (cleanupStale).
 */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  const killAll = (): void => {
    for (const lab of liveLabs) lab.killSync();
  };
  process.on('exit', killAll);
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.once(sig, () => {
      killAll();
      // Re-raise with the default disposition so the exit status stays honest.
      process.kill(process.pid, sig);
    });
  }
}

class HostImpl implements Host {
  pid = 0;
  launcher: ChildProcess | undefined;
  cgroupDirs: string[] = [];
  exited: string | undefined;

  constructor(
    readonly lab: LabImpl,
    readonly name: string,
    readonly addr: string,
    readonly index: number,
  ) {}

  get link(): string {
    return `vh-${this.name}`;
  }

  async exec(cmd: string, args: readonly string[] = [], opts: ExecOptions = {}): Promise<RunResult> {
    if (!this.pid) throw new Error(`host ${this.name} is not running`);
    const env = opts.env ?? { PATH: hostEnvPath(), LANG: 'C.UTF-8', SYSTEMD_PAGER: '', SYSTEMD_COLORS: '0' };
    const r = await run('nsenter', ['-t', String(this.pid), '-a', '--', cmd, ...args], { ...opts, env });
    if (opts.check && r.code !== 0) {
      throw new Error(`[${this.name}] ${cmd} ${args.join(' ')} exited ${r.code ?? r.signal}: ${(r.stderr || r.stdout).trim()}`);
    }
    return r;
  }

  systemctl(...args: string[]): Promise<RunResult> {
    return this.exec('systemctl', ['--no-pager', ...args], { timeoutMs: 120_000 });
  }

  async journal(unit: string, lines = 200): Promise<string> {
    const r = await this.exec('journalctl', ['--no-pager', '-o', 'short-iso', '-n', String(lines), '-u', unit], { timeoutMs: 60_000 });
    return r.stdout;
  }

  rootPath(p: string): string {
    if (!path.isAbsolute(p)) throw new Error(`host path must be absolute: ${p}`);
    return `/proc/${this.pid}/root${path.normalize(p)}`;
  }

  async writeFile(p: string, content: string | Buffer, mode = 0o644, owner?: string): Promise<void> {
    const rp = this.rootPath(p);
    await fs.mkdir(path.dirname(rp), { recursive: true });
    await fs.writeFile(rp, content, { mode });
    await fs.chmod(rp, mode);
    if (owner) await this.exec('chown', [owner, p], { check: true });
  }

  readFile(p: string): Promise<string> {
    return fs.readFile(this.rootPath(p), 'utf8');
  }

  async copyIn(src: string, dest: string, mode?: number, owner?: string): Promise<void> {
    const st = await fs.stat(src);
    await this.writeFile(dest, await fs.readFile(src), mode ?? st.mode & 0o7777, owner);
  }

  async installUnit(file: string, o: { enable?: boolean; start?: boolean } = {}): Promise<void> {
    const src = file.includes('/') ? file : path.join(SYSTEMD_DIR, file);
    const name = path.basename(src);
    await this.writeFile(`/etc/systemd/system/${name}`, await fs.readFile(src), 0o644);
    const r = await this.systemctl('daemon-reload');
    if (r.code !== 0) throw new Error(`[${this.name}] daemon-reload failed: ${r.stderr}`);
    if (o.enable) {
      const e = await this.systemctl('enable', name);
      if (e.code !== 0) throw new Error(`[${this.name}] enable ${name} failed: ${e.stderr}`);
    }
    if (o.start) {
      const s = await this.systemctl('start', name);
      if (s.code !== 0) throw new Error(`[${this.name}] start ${name} failed: ${s.stderr}\n${await this.journal(name, 50)}`);
    }
  }

  async waitForUnit(unit: string, state = 'active', timeoutMs = 60_000): Promise<void> {
    let last = '';
    try {
      await waitFor(
        async () => {
          last = (await this.systemctl('is-active', unit)).stdout.trim();
          return last === state ? true : undefined;
        },
        { what: `${this.name}: ${unit} ${state}`, timeoutMs, intervalMs: 200 },
      );
    } catch {
      throw new Error(`[${this.name}] ${unit} is ${last}, wanted ${state}; journal:\n${await this.journal(unit, 40)}`);
    }
  }

  async systemState(): Promise<{ state: string; failed: string[] }> {
    const s = await this.systemctl('is-system-running');
    const f = await this.systemctl('list-units', '--failed', '--plain', '--no-legend');
    return {
      state: s.stdout.trim(),
      failed: f.stdout
        .split('\n')
        .map((l) => l.trim().split(/\s+/)[0] ?? '')
        .filter((u) => u !== ''),
    };
  }
}

class LabImpl implements Lab {
  readonly id: string;
  readonly netns: string;
  readonly labAddr: string;
  readonly hosts: HostImpl[];
  readonly scratchDir: string;
  private readonly children = new Set<ChildProcess>();
  private readonly forwards = new Set<Forward>();
  private labCgroupDirs: string[] = [];
  private torn = false;
  private fwdSeq = 0;
  private spawnSeq = 0;

  constructor(
    readonly opts: LabOptions,
    readonly net: ReturnType<typeof subnetAddrs>,
    readonly layout: CgroupLayout,
    readonly hasNetem: boolean,
  ) {
    this.id = `${PREFIX}${process.pid}-${randomBytes(3).toString('hex')}`;
    this.netns = this.id;
    this.labAddr = net.labAddr;
    this.scratchDir = path.resolve(opts.scratchDir);
    this.hosts = opts.hosts.map((h, i) => new HostImpl(this, h, net.hostAddr(i), i));
  }

  host(name: string): Host {
    const h = this.hosts.find((x) => x.name === name);
    if (!h) throw new Error(`no host ${name} in lab (hosts: ${this.hosts.map((x) => x.name).join(', ')})`);
    return h;
  }

  private hostImpl(name: string): HostImpl {
    return this.host(name) as HostImpl;
  }

  async boot(): Promise<void> {
    await fs.mkdir(path.join(this.scratchDir, 'logs'), { recursive: true });
    const script = path.join(this.scratchDir, 'boot.sh');
    await fs.writeFile(script, BOOT_SCRIPT, { mode: 0o755 });

    // The lab's own netns and bridge.
    await runOk('ip', ['netns', 'add', this.netns]);
    const ipn = (...a: string[]): Promise<RunResult> => runOk('ip', ['-n', this.netns, ...a]);
    await ipn('link', 'set', 'dev', 'lo', 'up');
    await ipn('link', 'add', 'name', 'br0', 'type', 'bridge');
    await ipn('addr', 'add', `${this.labAddr}/${this.net.prefix}`, 'dev', 'br0');
    await ipn('link', 'set', 'dev', 'br0', 'up');
    this.labCgroupDirs = await makeCgroup(this.layout, `${this.id}/lab`);

    const hostLines = this.hosts.map((h) => `${h.addr} ${h.name}\n`).join('');
    const hostsFile = `127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n${this.labAddr} lab\n${hostLines}`;
    await Promise.all(this.hosts.map((h) => this.bootHost(h, script, hostsFile)));
    const timeout = this.opts.bootTimeoutMs ?? 120_000;
    await Promise.all(this.hosts.map((h) => this.waitBooted(h, timeout)));
  }

  private async bootHost(h: HostImpl, script: string, hostsFile: string): Promise<void> {
    const hostDir = path.join(this.scratchDir, 'hosts', h.name);
    await fs.mkdir(hostDir, { recursive: true });
    h.cgroupDirs = await makeCgroup(this.layout, `${this.id}/${h.name}`);
    const v1 = this.layout.hierarchies.filter((x) => x.version === 1).map((x) => x.key);
    const env: NodeJS.ProcessEnv = {
      PATH: hostEnvPath(),
      GL_NAME: h.name,
      GL_HOSTDIR: hostDir,
      GL_TMPFS: this.opts.tmpfsSize ?? '2g',
      GL_CGMODE: this.layout.mode,
      GL_CGV1: v1.join(' '),
      GL_MASK: [...MASKED_UNITS, ...(this.opts.mask ?? [])].join(' '),
      GL_HOSTS: hostsFile,
      GL_MACHINEID: randomBytes(16).toString('hex'),
      GL_USERS: (this.opts.users ?? ['guts']).join(' '),
      GL_SHARE: (this.opts.share ?? [REPO_ROOT]).join('\n'),
    };
    const log = await fs.open(path.join(this.scratchDir, 'logs', `${h.name}.boot.log`), 'w');
    // The launcher moves itself into the host's cgroups, so the host's
    // cgroup namespace (and everything its systemd creates) is rooted there.
    const enter = h.cgroupDirs.map((d) => `echo $$ > '${d}/cgroup.procs'`).join('; ');
    const child = spawn(
      'sh',
      ['-c', `${enter}; exec unshare --pid --fork --mount --net --uts --ipc --cgroup --propagation private --kill-child /bin/bash '${script}'`],
      { env, stdio: ['pipe', log.fd, log.fd], detached: true },
    );
    await log.close();
    h.launcher = child;
    child.on('exit', (code, sig) => {
      h.exited = `launcher exited ${code ?? sig}`;
    });
    child.stdin?.on('error', () => {});
    // PID 1 of the new namespace is unshare's only child.
    h.pid = await waitFor(
      async () => {
        if (h.exited) throw new Error(`${h.exited}; see ${path.join(this.scratchDir, 'logs', `${h.name}.boot.log`)}`);
        const kids = await fs.readFile(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').catch(() => '');
        const first = kids.trim().split(/\s+/)[0];
        if (!first) return undefined;
        const exe = await fs.readlink(`/proc/${first}/exe`).catch(() => '');
        // Until unshare has exec'd (sh still running) the child is not ours yet.
        return exe === '' ? undefined : Number(first);
      },
      { what: `${h.name}: namespace PID 1`, timeoutMs: 15_000, intervalMs: 10 },
    );
    // Wire eth0 before systemd starts anything.
    const ipn = (...a: string[]): Promise<RunResult> => runOk('ip', ['-n', this.netns, ...a]);
    await ipn('link', 'add', 'name', h.link, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(h.pid));
    await ipn('link', 'set', 'dev', h.link, 'master', 'br0');
    await ipn('link', 'set', 'dev', h.link, 'up');
    const inHost = (...a: string[]): Promise<RunResult> => runOk('nsenter', ['-t', String(h.pid), '-n', 'ip', ...a]);
    await inHost('addr', 'add', `${h.addr}/${this.net.prefix}`, 'dev', 'eth0');
    await inHost('link', 'set', 'dev', 'eth0', 'up');
    await inHost('route', 'add', 'default', 'via', this.labAddr);
    child.stdin?.end('go\n');
  }

  private async waitBooted(h: HostImpl, timeoutMs: number): Promise<void> {
    await waitFor(
      async () => {
        if (h.exited) throw new Error(`${h.exited}; see ${path.join(this.scratchDir, 'logs', `${h.name}.boot.log`)}`);
        // Until pivot_root the PID 1 is still the boot script (bash).
        const exe = await fs.readlink(`/proc/${h.pid}/exe`).catch(() => '');
        if (!exe.endsWith('/systemd')) return undefined;
        const r = await h.exec('systemctl', ['is-system-running', '--wait'], { timeoutMs: 10_000 });
        const s = r.stdout.trim();
        return s === 'running' || s === 'degraded' ? s : undefined;
      },
      { what: `${h.name}: systemd boot`, timeoutMs, intervalMs: 50 },
    );
  }

  private wrapInLab(cmd: string, args: readonly string[]): string[] {
    // The wrapper joins the lab cgroup first so teardown finds every descendant.
    const enter = this.labCgroupDirs.map((d) => `echo $$ > '${d}/cgroup.procs'`).join('; ');
    return ['-c', `${enter}; exec nsenter --net=/run/netns/${this.netns} -- "$@"`, 'gutslab-lab', cmd, ...args];
  }

  async runInLab(cmd: string, args: readonly string[] = [], opts: ExecOptions = {}): Promise<RunResult> {
    const r = await run('sh', this.wrapInLab(cmd, args), opts);
    if (opts.check && r.code !== 0) throw new Error(`[lab] ${cmd} ${args.join(' ')} exited ${r.code ?? r.signal}: ${(r.stderr || r.stdout).trim()}`);
    return r;
  }

  spawnInLab(cmd: string, args: readonly string[] = [], o: { env?: NodeJS.ProcessEnv; cwd?: string; logFile?: string } = {}): ChildProcess {
    if (this.torn) throw new Error('lab is torn down');
    const child = spawn('sh', this.wrapInLab(cmd, args), {
      env: o.env ?? process.env,
      cwd: o.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // Never inherit: tap reads the test's stdout as TAP.
    const logFile = o.logFile ?? path.join(this.scratchDir, 'logs', `lab-${++this.spawnSeq}-${path.basename(cmd)}.log`);
    {
      const out = fs.open(logFile, 'a');
      const sink = (d: Buffer): void => {
        void out.then((fh) => fh.write(d)).catch(() => {});
      };
      child.stdout?.on('data', sink);
      child.stderr?.on('data', sink);
      child.on('close', () => void out.then((fh) => fh.close()).catch(() => {}));
    }
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    return child;
  }

  async forward(port: number, addr: string = this.labAddr): Promise<Forward> {
    const socketPath = path.join(this.scratchDir, `fwd-${++this.fwdSeq}.sock`);
    if (Buffer.byteLength(socketPath) > 107) throw new Error(`scratch dir too long for a unix socket: ${socketPath}`);
    // A tiny relay inside the lab netns: unix socket in the scratch dir -> addr:port.
    const relay =
      `const net=require('net');const [sp,h,p]=process.argv.slice(1);` +
      `net.createServer(c=>{const u=net.connect(+p,h);c.pipe(u).pipe(c);c.on('error',()=>u.destroy());u.on('error',()=>c.destroy());})` +
      `.listen(sp);`;
    const child = this.spawnInLab(process.execPath, ['-e', relay, socketPath, addr, String(port)]);
    await waitFor(async () => (existsSync(socketPath) ? true : undefined), { what: `forwarder ${socketPath}`, timeoutMs: 10_000, intervalMs: 20 });
    const sockets = new Set<net.Socket>();
    const server = net.createServer((c) => {
      sockets.add(c);
      c.on('close', () => sockets.delete(c));
      const u = net.connect(socketPath);
      c.pipe(u).pipe(c);
      c.on('error', () => u.destroy());
      u.on('error', () => c.destroy());
    });
    await new Promise<void>((res, rej) => server.listen(0, '127.0.0.1', res).once('error', rej));
    const fwd: Forward = {
      host: '127.0.0.1',
      port: (server.address() as net.AddressInfo).port,
      socketPath,
      close: async () => {
        this.forwards.delete(fwd);
        // Open keep-alive sockets would otherwise keep server.close() waiting.
        for (const s of sockets) s.destroy();
        await new Promise<void>((res) => server.close(() => res()));
        child.kill('SIGKILL');
      },
    };
    this.forwards.add(fwd);
    return fwd;
  }

  async partition(host: string): Promise<void> {
    const h = this.hostImpl(host);
    await runOk('ip', ['-n', this.netns, 'link', 'set', 'dev', h.link, 'down']);
  }

  async heal(host: string): Promise<void> {
    const h = this.hostImpl(host);
    await runOk('ip', ['-n', this.netns, 'link', 'set', 'dev', h.link, 'up']);
    // The bridge port goes through listening/learning before forwarding again.
    await waitFor(
      async () => {
        const r = await run('ip', ['-n', this.netns, '-d', 'link', 'show', 'dev', h.link]);
        return /state forwarding/.test(r.stdout) || !/bridge_slave/.test(r.stdout) ? true : undefined;
      },
      { what: `${host} bridge port forwarding`, timeoutMs: 30_000, intervalMs: 50 },
    );
  }

  async netem(host: string, spec: string): Promise<void> {
    if (!this.hasNetem) {
      throw new Error('netem unavailable: this kernel has no sch_netem (CONFIG_NET_SCH_NETEM is not set); use partition()/heal() instead');
    }
    const h = this.hostImpl(host);
    const args = spec.trim().split(/\s+/);
    await runOk('tc', ['-n', this.netns, 'qdisc', 'replace', 'dev', h.link, 'root', 'netem', ...args]);
    await runOk('nsenter', ['-t', String(h.pid), '-n', 'tc', 'qdisc', 'replace', 'dev', 'eth0', 'root', 'netem', ...args]);
  }

  async clearNetem(host: string): Promise<void> {
    const h = this.hostImpl(host);
    await run('tc', ['-n', this.netns, 'qdisc', 'del', 'dev', h.link, 'root']);
    await run('nsenter', ['-t', String(h.pid), '-n', 'tc', 'qdisc', 'del', 'dev', 'eth0', 'root']);
  }

  killSync(): void {
    for (const c of this.children) c.kill('SIGKILL');
    for (const h of this.hosts) {
      try {
        if (h.pid) process.kill(h.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }

  async teardown(): Promise<void> {
    if (this.torn) return;
    this.torn = true;
    liveLabs.delete(this);
    for (const f of [...this.forwards]) await f.close().catch(() => {});
    for (const c of this.children) c.kill('SIGKILL');
    // PID 1 first, so its launcher (unshare) reaps it; killing the launcher
    // first would orphan PID 1 to the machine's init and leave a zombie.
    await Promise.all(
      this.hosts.map(async (h) => {
        if (!h.pid) return;
        try {
          process.kill(h.pid, 'SIGKILL');
        } catch {
          return;
        }
        const l = h.launcher;
        if (l && l.exitCode === null && l.signalCode === null) {
          await Promise.race([new Promise((r) => l.once('exit', r)), sleep(5_000)]);
        }
      }),
    );
    const problems = await destroyLab(this.id, this.layout);
    for (const h of this.hosts) {
      h.launcher?.stdin?.destroy();
      h.pid = 0;
    }
    if (problems.length) throw new Error(`lab ${this.id} teardown left: ${problems.join(', ')}`);
  }
}
