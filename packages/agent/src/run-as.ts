/**
 * Who runs code the agent has not seen run before. The agent is root (it swaps
 * /usr/local/bin/guts-node and drives systemd), but a candidate release is only a
 * claim until the node has run it: its `--version`, migrations, their
 * verification and smoke checks run as the node's own user, the one that owns the
 * data and would run the new binary anyway. A node that itself runs as root (no
 * User= in its unit, the process driver without node.user) gives nobody to run
 * as: the agent says so in its log at every command that would run one.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CodedError } from '@guts-upgrade/protocol';
import type { AgentConfig } from './config.js';
import type { ServiceDriver } from './service/driver.js';
import { runArgv } from './util.js';

export interface RunAs {
  uid: number;
  gid: number;
  /** For evidence and logs: "guts (uid 998)". */
  label: string;
}

export interface Identities {
  /** The node's user: the candidate's --version, migrations, verify and smoke commands. Null: as the agent itself. */
  node: RunAs | null;
  /** Why `node` is null while the agent is root, for the warning; null otherwise. */
  asRootBecause: string | null;
}

/** A user name (getent, so NSS users count) or "uid:gid". */
export async function lookupUser(name: string): Promise<RunAs> {
  const numeric = /^(\d+):(\d+)$/.exec(name);
  if (numeric) return { uid: Number(numeric[1]), gid: Number(numeric[2]), label: `uid ${numeric[1]}` };
  const r = await runArgv(['getent', 'passwd', name], { timeoutMs: 10_000 });
  const f = r.stdout.trim().split(':');
  if (r.code !== 0 || f.length < 4) {
    throw new CodedError(
      'E_CONFIG',
      `config node.user: no such user ${JSON.stringify(name)} (getent passwd ${name} exited ${r.code}); name the user guts-node runs as`,
    );
  }
  return { uid: Number(f[2]), gid: Number(f[3]), label: `${name} (uid ${f[2]})` };
}

/**
 * The node's user, in order: node.user from the config; the systemd unit's User=;
 * the owner of the node's data directory (the process driver).
 */
export async function resolveIdentities(config: AgentConfig, driver: ServiceDriver): Promise<Identities> {
  if (process.getuid?.() !== 0) return { node: null, asRootBecause: null }; // cannot switch: runs as the agent's own user
  const named = config.node.user ?? (await driver.runsAs());
  if (named === 'root' || named === '0:0')
    return { node: null, asRootBecause: `the node runs as root (${config.node.user ? 'node.user' : "its unit's User="})` };
  if (named !== null) {
    const who = await lookupUser(named);
    return who.uid === 0 ? { node: null, asRootBecause: `node.user ${named} is uid 0` } : { node: who, asRootBecause: null };
  }
  const st = fs.statSync(config.node.dataDir, { throwIfNoEntry: false });
  if (st && st.uid !== 0) return { node: { uid: st.uid, gid: st.gid, label: `owner of ${config.node.dataDir} (uid ${st.uid})` }, asRootBecause: null };
  return { node: null, asRootBecause: `no node.user, and ${config.node.dataDir} belongs to root` };
}

/** runArgv's options for `who` (nothing: run as the agent). */
export function asUser(who: RunAs | null): { uid?: number; gid?: number } {
  return who ? { uid: who.uid, gid: who.gid } : {};
}

/**
 * Runs a staged binary as `who`: from a copy in a fresh directory that user can
 * read (the staging area is inside the agent's 0700 state directory), removed after.
 */
export async function runStagedAs(binary: string, args: string[], who: RunAs | null, timeoutMs: number): Promise<Awaited<ReturnType<typeof runArgv>>> {
  if (!who) return runArgv([binary, ...args], { timeoutMs });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'guts-candidate-'));
  try {
    fs.chmodSync(dir, 0o755);
    const copy = path.join(dir, path.basename(binary));
    fs.copyFileSync(binary, copy);
    fs.chmodSync(copy, 0o755); // root's file, executable by the user, writable by nobody else
    return await runArgv([copy, ...args], { timeoutMs, uid: who.uid, gid: who.gid, cwd: dir });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
