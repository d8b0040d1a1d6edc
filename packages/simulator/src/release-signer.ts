/**
 * A release repository for the demo, the tests and the benchmarks, made and
 * signed by the operator's own tool (`guts-upgrade release init|add`, run as
 * a child process), so agents there run with a pinned root exactly as on a
 * validator host and never with `allowUnsigned`.
 *
 * The repository directory is published as is (put it under the artifact
 * server's directory); the keys stay beside it, outside what is served.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { sha256OfFile } from './artifacts.js';

export interface SignOptions {
  pathKind?: 'patch' | 'minor' | 'major';
  migration?: 'none' | 'automatic' | 'manual';
  minFrom?: string;
}

export interface ReleaseSigner {
  /** The published directory (metadata/, targets/). */
  dir: string;
  /** Its root metadata, what each agent pins as `release.root`. */
  root: string;
  /**
   * Signs `file` as guts-node `version`, replacing what was signed under that
   * version before (a test's bad build is a release its owners signed).
   * Signing the same file again with the same options does nothing.
   */
  sign(file: string, version: string, opts?: SignOptions): void;
  /** Signs the registry image `ref` (by digest) as guts-node `version` (`release add --image`), the same way. */
  signImage(ref: string, version: string, opts?: SignOptions): void;
}

/**
 * The `guts-upgrade` CLI, resolved through the coordinator package at run
 * time (what a package install puts on PATH): the simulator does not import
 * the coordinator, it runs its command.
 */
export function releaseToolPath(): string {
  const manifest = createRequire(import.meta.url).resolve('@guts-upgrade/coordinator/package.json');
  const pkg = JSON.parse(fs.readFileSync(manifest, 'utf8')) as { bin: Record<string, string> };
  return path.join(path.dirname(manifest), pkg.bin['guts-upgrade']!);
}

function release(args: string[]): void {
  const env = { ...process.env };
  delete env.NODE_OPTIONS; // a test runner's loader hooks stay out of the child
  execFileSync(process.execPath, [releaseToolPath(), 'release', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Creates the repository in `dir` (which must not hold one) with one key per role, keys in `<dir>-keys`. */
export function createReleaseSigner(dir: string): ReleaseSigner {
  const keysDir = `${dir}-keys`;
  release(['init', '--dir', dir, '--keys-dir', keysDir]);
  const signed = new Map<string, string>();
  return {
    dir,
    root: path.join(dir, 'metadata', 'root.json'),
    sign(file, version, opts = {}) {
      add(['--file', file], `${sha256OfFile(file)} ${JSON.stringify(opts)}`, version, opts);
    },
    signImage(ref, version, opts = {}) {
      add(['--image', ref], `${ref} ${JSON.stringify(opts)}`, version, opts);
    },
  };
  function add(what: string[], key: string, version: string, opts: SignOptions): void {
    if (signed.get(version) === key) return;
    const extra = [
      ...(opts.pathKind ? ['--path-kind', opts.pathKind] : []),
      ...(opts.migration ? ['--migration', opts.migration] : []),
      ...(opts.minFrom ? ['--min-from', opts.minFrom] : []),
    ];
    release(['add', '--dir', dir, '--keys-dir', keysDir, ...what, '--version', version, ...extra]);
    signed.set(version, key);
  }
}
