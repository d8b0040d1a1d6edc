/**
 * Which paths a backup may touch. The catalogue (the journal's `backups` rows)
 * and the archives are files on the host that anyone with write access to the
 * state dir could change, and a restore deletes and writes as root: every path
 * they name is checked before anything changes, and one that reaches past its
 * root is refused with E_RESTORE_UNSAFE.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { once } from 'node:events';
import path from 'node:path';
import { CodedError } from '@guts-upgrade/protocol';
import type { BackupRow } from './journal.js';
import { loadTar } from './tar-writer.js';

/** Why `rel` does not name something strictly inside the dir it is relative to, or null when it does. */
export function escapes(rel: unknown): string | null {
  if (typeof rel !== 'string' || rel.length === 0) return 'is not a relative path';
  if (rel.includes('\0')) return 'contains a NUL byte';
  if (path.posix.isAbsolute(rel) || path.win32.isAbsolute(rel)) return 'is absolute';
  // Backslashes count as separators too: stricter than Linux needs, never looser.
  const parts = rel.split(/[\\/]+/).filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) return 'climbs out with ..';
  if (parts.length === 0) return 'names the root itself';
  return null;
}

export function unsafe(backupId: string, what: string, value: unknown, reason: string): CodedError {
  return new CodedError('E_RESTORE_UNSAFE', `backup ${backupId}: ${what} ${JSON.stringify(value)?.slice(0, 200)} ${reason}; nothing was changed`, {
    backupId,
    what,
  });
}

/** `root`/`rel` once `rel` is known to stay inside `root`; E_RESTORE_UNSAFE otherwise. */
export function inside(root: string, rel: string, backupId: string, what: string): string {
  const reason = escapes(rel);
  if (reason) throw unsafe(backupId, what, rel, reason);
  return path.join(root, rel);
}

export interface RestoreTargets {
  dataDir: string;
  binary: string;
  config: string;
}

/**
 * The catalogue row names only paths inside its data dir, archives inside its
 * backup dir, and the binary, config and data dir this agent is configured
 * with: a restore writes to the configured paths, never to ones a row names.
 */
export function checkCatalogue(row: BackupRow, targets: RestoreTargets): void {
  const id = row.id;
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(id)) throw unsafe(id, 'the id', id, 'is not a backup id');
  const m = row.meta;
  for (const [key, entry] of Object.entries({ binary: m.binary, config: m.config, dataBase: m.dataBase, dataDelta: m.dataDelta })) {
    if (!entry) continue;
    if (escapes(entry.file) || entry.file !== path.basename(entry.file)) throw unsafe(id, `archive ${key}`, entry.file, 'is not a file name in the backup dir');
  }
  for (const [key, configured, named] of [
    ['data dir', targets.dataDir, m.dataDir],
    ['binary', targets.binary, m.binaryPath],
    ['node config', targets.config, m.configPath],
  ] as const) {
    if (named !== undefined && path.resolve(named) !== configured) throw unsafe(id, `the ${key}`, named, `is not the configured one (${configured})`);
  }
  for (const d of m.deleted ?? []) {
    const reason = escapes(d);
    if (reason) throw unsafe(id, 'deleted entry', d, `${reason} (outside the data dir)`);
  }
  for (const f of Object.keys(m.files ?? {})) {
    const reason = escapes(f);
    if (reason) throw unsafe(id, 'file list entry', f, `${reason} (outside the data dir)`);
  }
}

// What the agent's own archives hold (node-tar writes a hard link for a file seen twice); anything else is refused.
const MEMBER_TYPES = new Set(['File', 'OldFile', 'ContiguousFile', 'Directory', 'Link']);

export interface ArchiveInspection {
  sha256: string;
  /** The first member that would land outside the extraction dir, or is of a kind the agent never archives. */
  problem: string | null;
}

/** One read of an archive: its sha256 and its members' paths, so a restore checks both without a second pass. */
export async function inspectArchive(file: string): Promise<ArchiveInspection> {
  const hash = crypto.createHash('sha256');
  let problem: string | null = null;
  const tar = await loadTar();
  const parser = new tar.Parser({
    onReadEntry: (entry) => {
      if (problem === null) {
        const reason = escapes(entry.path);
        if (reason) problem = `member ${JSON.stringify(entry.path).slice(0, 200)} ${reason}`;
        else if (!MEMBER_TYPES.has(entry.type)) problem = `member ${JSON.stringify(entry.path).slice(0, 200)} is a ${entry.type}`;
        else if (entry.type === 'Link') {
          const linkReason = escapes(entry.linkpath);
          if (linkReason)
            problem = `hard link ${JSON.stringify(entry.path).slice(0, 200)} points at ${JSON.stringify(entry.linkpath).slice(0, 200)}, which ${linkReason}`;
        }
      }
      entry.resume();
    },
  });
  const parsed = new Promise<void>((resolve, reject) => {
    parser.on('end', resolve);
    parser.on('error', reject);
  });
  for await (const chunk of fs.createReadStream(file)) {
    hash.update(chunk as Buffer);
    if (!parser.write(chunk as Buffer)) await once(parser, 'drain');
  }
  parser.end();
  await parsed;
  return { sha256: hash.digest('hex'), problem };
}
