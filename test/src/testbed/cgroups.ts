import { type Dirent, promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { sleep } from './proc.js';

/** One mounted cgroup hierarchy of the machine, with this process's place in it. */
export interface Hierarchy {
  /** 'cpu', 'memory', ..., 'name=systemd', or '' for cgroup2. */
  key: string;
  mountpoint: string;
  version: 1 | 2;
  /** This process's cgroup in that hierarchy; labs nest under it so they stay inside our own accounting. */
  selfPath: string;
}

export interface CgroupLayout {
  mode: 'hybrid' | 'unified';
  hierarchies: Hierarchy[];
}

/** Reads the machine's cgroup layout from /proc/self/mountinfo and /proc/self/cgroup. */
export function detectCgroups(): CgroupLayout {
  const mountinfo = readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  const selfLines = readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n');
  const selfByKey = new Map<string, string>();
  for (const l of selfLines) {
    const m = /^\d+:([^:]*):(.*)$/.exec(l);
    if (!m) continue;
    for (const k of (m[1] ?? '').split(',')) selfByKey.set(k, m[2] ?? '/');
  }
  const hierarchies: Hierarchy[] = [];
  let rootIsV2 = false;
  for (const line of mountinfo) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    const mountpoint = left[4] ?? '';
    const fstype = right[0];
    const superOpts = (right[2] ?? '').split(',');
    if (!mountpoint.startsWith('/sys/fs/cgroup')) continue;
    if (fstype === 'cgroup2') {
      if (mountpoint === '/sys/fs/cgroup') rootIsV2 = true;
      hierarchies.push({ key: '', mountpoint, version: 2, selfPath: selfByKey.get('') ?? '/' });
    } else if (fstype === 'cgroup') {
      const name = superOpts.find((o) => o.startsWith('name='));
      const ctrls = superOpts.filter(
        (o) =>
          !['rw', 'ro', 'relatime', 'noexec', 'nosuid', 'nodev', 'none', 'xattr', 'clone_children'].includes(o) &&
          !o.startsWith('name=') &&
          !o.startsWith('release_agent'),
      );
      // A v1 hierarchy may carry several controllers (cpu,cpuacct); systemd needs them mounted together.
      const key = name ?? ctrls.join(',');
      const selfPath = selfByKey.get(name ?? ctrls[0] ?? '') ?? '/';
      hierarchies.push({ key, mountpoint, version: 1, selfPath });
    }
  }
  return { mode: rootIsV2 ? 'unified' : 'hybrid', hierarchies };
}

export function cgroupDir(h: Hierarchy, rel: string): string {
  return path.join(h.mountpoint, h.selfPath, rel);
}

/** Creates rel (e.g. "gutslab-1-ab/v0") in every hierarchy; cpuset needs cpus/mems filled in before use. */
export async function makeCgroup(layout: CgroupLayout, rel: string): Promise<string[]> {
  const dirs: string[] = [];
  for (const h of layout.hierarchies) {
    const parts = rel.split('/');
    let cur = path.join(h.mountpoint, h.selfPath);
    for (const p of parts) {
      const parent = cur;
      cur = path.join(cur, p);
      await fs.mkdir(cur, { recursive: true });
      if (h.key.split(',').includes('cpuset')) {
        for (const f of ['cpuset.cpus', 'cpuset.mems']) {
          const mine = (await fs.readFile(path.join(cur, f), 'utf8')).trim();
          if (mine === '') await fs.writeFile(path.join(cur, f), (await fs.readFile(path.join(parent, f), 'utf8')).trim());
        }
      }
    }
    dirs.push(cur);
  }
  return dirs;
}

/** Every pid in a cgroup subtree. */
export async function cgroupPids(dir: string): Promise<number[]> {
  const out: number[] = [];
  const walk = async (d: string): Promise<void> => {
    let entries: Dirent[];
    try {
      entries = await fs.readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    try {
      const procs = await fs.readFile(path.join(d, 'cgroup.procs'), 'utf8');
      for (const s of procs.split('\n')) if (s.trim()) out.push(Number(s));
    } catch {
      /* vanished */
    }
    for (const e of entries) if (e.isDirectory()) await walk(path.join(d, e.name));
  };
  await walk(dir);
  return out;
}

/** rmdir a cgroup subtree deepest first; retries while dying tasks still hold it. Returns dirs that remain. */
export async function removeCgroupTree(dir: string, timeoutMs = 10_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  const collect = async (d: string, acc: string[]): Promise<void> => {
    let entries: Dirent[];
    try {
      entries = await fs.readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) if (e.isDirectory()) await collect(path.join(d, e.name), acc);
    acc.push(d);
  };
  for (;;) {
    const dirs: string[] = [];
    await collect(dir, dirs);
    const left: string[] = [];
    for (const d of dirs) {
      try {
        await fs.rmdir(d);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') left.push(d);
      }
    }
    if (left.length === 0 || Date.now() > deadline) return left;
    for (const pid of await cgroupPids(dir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await sleep(100);
  }
}

/** Finds directories named prefix* in every hierarchy (not descending into them). */
export async function findCgroups(layout: CgroupLayout, prefix: string, maxDepth = 5): Promise<string[]> {
  const found: string[] = [];
  const walk = async (d: string, depth: number): Promise<void> => {
    let entries: Dirent[];
    try {
      entries = await fs.readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const p = path.join(d, e.name);
      if (e.name.startsWith(prefix)) found.push(p);
      else if (depth < maxDepth) await walk(p, depth + 1);
    }
  };
  for (const h of layout.hierarchies) await walk(h.mountpoint, 0);
  return found;
}
