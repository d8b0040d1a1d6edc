/**
 * The data dir:
 *   schema.json          {"schema":101,"version":"1.1.0","updated_at":"…"}  (written atomically)
 *   manifest.json        {"files":{"objects/pack-0000.pack":{"sha256":"…","size":N}}}
 *   objects/*.pack       real random data (not sparse)
 *   chain/blocks.jsonl   one finalized block per line
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { schemaForVersion } from './version.js';

export const SCHEMA_FILE = 'schema.json';
export const MANIFEST_FILE = 'manifest.json';
export const OBJECTS_DIR = 'objects';
export const CHAIN_FILE = path.join('chain', 'blocks.jsonl');

export interface SchemaInfo {
  schema: number;
  version: string;
  updated_at: string;
  migrated_from?: number;
}
export interface Manifest {
  files: Record<string, { sha256: string; size: number }>;
}

export class StorageError extends Error {}

export function writeFileAtomic(file: string, data: string | Buffer): void {
  const tmp = `${file}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

/** null when there is no schema file (a fresh data dir); throws StorageError when it is not sane. */
export function readSchema(dataDir: string): SchemaInfo | null {
  const file = path.join(dataDir, SCHEMA_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new StorageError(`cannot read ${file}: ${(e as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new StorageError(`${file} is corrupt (not JSON)`);
  }
  const s = doc as Partial<SchemaInfo>;
  if (!s || typeof s.schema !== 'number' || !Number.isInteger(s.schema) || s.schema < 0 || typeof s.version !== 'string') {
    throw new StorageError(`${file} is corrupt (no valid schema number)`);
  }
  return s as SchemaInfo;
}

export function writeSchema(dataDir: string, schema: number, version: string, migratedFrom?: number): void {
  const info: SchemaInfo = { schema, version, updated_at: new Date().toISOString() };
  if (migratedFrom !== undefined) info.migrated_from = migratedFrom;
  writeFileAtomic(path.join(dataDir, SCHEMA_FILE), `${JSON.stringify(info, null, 2)}\n`);
}

export function readManifest(dataDir: string): Manifest {
  const file = path.join(dataDir, MANIFEST_FILE);
  if (!fs.existsSync(file)) return { files: {} };
  try {
    const m = JSON.parse(fs.readFileSync(file, 'utf8')) as Manifest;
    if (!m || typeof m.files !== 'object') throw new Error('no files map');
    return m;
  } catch (e) {
    throw new StorageError(`${file} is corrupt: ${(e as Error).message}`);
  }
}

export function sha256File(file: string): string {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(1 << 20);
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

export interface InitOptions {
  /** MB of random data files to add (default 0). */
  sizeMb?: number;
  /** Version whose schema a fresh data dir gets (ignored when schema.json exists). */
  version: string;
  /** Size of each pack file in MB (default 4). */
  fileMb?: number;
}

/** Creates (or extends) a data dir: schema, manifest, N MB of real random pack files. */
export function initDataDir(dataDir: string, opts: InitOptions): { schema: number; files: number; bytes: number } {
  fs.mkdirSync(path.join(dataDir, OBJECTS_DIR), { recursive: true });
  fs.mkdirSync(path.join(dataDir, 'chain'), { recursive: true });
  let info = readSchema(dataDir);
  if (!info) {
    writeSchema(dataDir, schemaForVersion(opts.version), opts.version);
    info = readSchema(dataDir)!;
  }
  const manifest = readManifest(dataDir);
  let remaining = Math.round((opts.sizeMb ?? 0) * 1024 * 1024);
  const per = Math.max(1, Math.round((opts.fileMb ?? 4) * 1024 * 1024));
  let idx = Object.keys(manifest.files).length;
  let files = 0;
  let bytes = 0;
  const chunk = Buffer.allocUnsafe(1 << 20);
  while (remaining > 0) {
    const size = Math.min(per, remaining);
    let rel: string;
    do {
      rel = path.join(OBJECTS_DIR, `pack-${String(idx++).padStart(4, '0')}.pack`);
    } while (manifest.files[rel]);
    const h = crypto.createHash('sha256');
    const fd = fs.openSync(path.join(dataDir, rel), 'w');
    try {
      let left = size;
      while (left > 0) {
        const n = Math.min(chunk.length, left);
        crypto.randomFillSync(chunk, 0, n);
        fs.writeSync(fd, chunk, 0, n);
        h.update(chunk.subarray(0, n));
        left -= n;
      }
    } finally {
      fs.closeSync(fd);
    }
    manifest.files[rel] = { sha256: h.digest('hex'), size };
    remaining -= size;
    files++;
    bytes += size;
  }
  writeFileAtomic(path.join(dataDir, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
  return { schema: info.schema, files, bytes };
}

export interface VerifyResult {
  ok: boolean;
  schema: number | null;
  problems: string[];
  checked: number;
}

/** Integrity check: schema sane, manifest sane, chain parses; with full, every data file's sha256. */
export function verifyDataDir(dataDir: string, full: boolean): VerifyResult {
  const problems: string[] = [];
  let schema: number | null = null;
  let checked = 0;
  if (!fs.existsSync(dataDir)) return { ok: false, schema, problems: [`data dir ${dataDir} does not exist`], checked };
  try {
    const s = readSchema(dataDir);
    if (!s) problems.push(`${SCHEMA_FILE} is missing`);
    else schema = s.schema;
  } catch (e) {
    problems.push((e as Error).message);
  }
  let manifest: Manifest | null = null;
  try {
    manifest = readManifest(dataDir);
  } catch (e) {
    problems.push((e as Error).message);
  }
  const chain = path.join(dataDir, CHAIN_FILE);
  if (fs.existsSync(chain)) {
    const lines = fs
      .readFileSync(chain, 'utf8')
      .split('\n')
      .filter((l) => l.length > 0);
    lines.forEach((l, i) => {
      try {
        JSON.parse(l);
      } catch {
        if (i < lines.length - 1) problems.push(`${CHAIN_FILE} line ${i + 1} is corrupt`);
      }
    });
  }
  if (full && manifest) {
    for (const [rel, want] of Object.entries(manifest.files)) {
      const file = path.join(dataDir, rel);
      if (!fs.existsSync(file)) {
        problems.push(`${rel} is missing`);
        continue;
      }
      const got = sha256File(file);
      checked++;
      if (got !== want.sha256) problems.push(`${rel} sha256 mismatch (want ${want.sha256}, got ${got})`);
    }
    const objDir = path.join(dataDir, OBJECTS_DIR);
    if (fs.existsSync(objDir)) {
      for (const f of fs.readdirSync(objDir)) {
        const rel = path.join(OBJECTS_DIR, f);
        if (!manifest.files[rel]) problems.push(`${rel} is not in the manifest`);
      }
    }
  }
  return { ok: problems.length === 0, schema, problems, checked };
}

/** What the `corrupts` build does: garbles a pack file and the schema file. */
export function corruptDataDir(dataDir: string): void {
  const objDir = path.join(dataDir, OBJECTS_DIR);
  fs.mkdirSync(objDir, { recursive: true });
  const packs = fs.readdirSync(objDir).filter((f) => f.endsWith('.pack'));
  if (packs.length > 0) {
    const fd = fs.openSync(path.join(objDir, packs[0]!), 'r+');
    try {
      fs.writeSync(fd, crypto.randomBytes(64), 0, 64, 0);
    } finally {
      fs.closeSync(fd);
    }
  } else {
    fs.writeFileSync(path.join(objDir, 'garbage.pack'), crypto.randomBytes(256));
  }
  fs.writeFileSync(path.join(dataDir, SCHEMA_FILE), '\u0000\u0000{"schema": corrupt');
}

export interface Block {
  height: number;
  block_id: string;
  parent_id: string;
  producer: string;
  producer_name: string;
  timestamp: number;
  tx_count: number;
  tx_root: string;
  state_root: string;
  view: number;
  signature_count: number;
}

export const ZERO_ID = '0'.repeat(64);

/** Finalized blocks, in memory and appended to chain/blocks.jsonl. */
export class ChainStore {
  readonly blocks: Block[] = [];
  private readonly file: string;

  constructor(dataDir: string) {
    this.file = path.join(dataDir, CHAIN_FILE);
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    if (fs.existsSync(this.file)) {
      for (const line of fs.readFileSync(this.file, 'utf8').split('\n')) {
        if (!line) continue;
        let b: Block;
        // A torn last line after a crash is dropped; the block is re-synced from peers.
        try {
          b = JSON.parse(line) as Block;
        } catch {
          continue;
        }
        if (b.height === this.blocks.length + 1) this.blocks.push(b);
      }
    }
  }

  get height(): number {
    return this.blocks.length;
  }
  get tipId(): string {
    return this.blocks.at(-1)?.block_id ?? ZERO_ID;
  }
  get(height: number): Block | undefined {
    return height >= 1 ? this.blocks[height - 1] : undefined;
  }

  append(b: Block): void {
    if (b.height !== this.height + 1) throw new StorageError(`block ${b.height} does not follow ${this.height}`);
    fs.appendFileSync(this.file, `${JSON.stringify(b)}\n`);
    this.blocks.push(b);
  }
}
