/**
 * Release artifacts for tests: small executable launchers, one per build, each
 * baking in a build identity and loading this package's compiled main.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Fault } from './version.js';

export interface ArtifactEntry {
  name: string;
  version: string;
  fault: Fault;
  /** File name inside outDir. */
  file: string;
  /** Absolute path at build time. */
  path: string;
  sha256: string;
  size: number;
}

export interface ArtifactManifest {
  created_at: string;
  node: string;
  main: string;
  artifacts: ArtifactEntry[];
}

export const GOOD_VERSIONS = ['1.0.0', '1.0.1', '1.1.0', '1.2.0', '2.0.0'] as const;
export const BAD_BUILDS: readonly { version: string; fault: Fault }[] = [
  { version: '1.1.0', fault: 'exits' },
  { version: '1.1.0', fault: 'never-ready' },
  { version: '1.1.0', fault: 'corrupts' },
  { version: '1.1.0', fault: 'lies' },
  { version: '1.1.0', fault: 'degrades' },
  // Reports p2p `up` with 0 peers and connects to nobody.
  { version: '1.1.0', fault: 'isolated' },
];

/** Absolute path of the compiled main module the launchers load. */
export const MAIN_JS = fileURLToPath(new URL('./main.js', import.meta.url));

export function artifactName(version: string, fault: Fault = 'none'): string {
  return fault === 'none' ? `guts-node-${version}` : `guts-node-${version}-${fault}`;
}

/**
 * The launcher is valid as CommonJS and as ESM (no require, no import
 * statement), so it runs wherever it lands, with or without a package.json
 * nearby; the absolute node path keeps systemd's PATH out of it.
 */
export function launcherSource(opts: { version: string; fault?: Fault; nodePath?: string; mainJs?: string; build?: string }): string {
  const fault = opts.fault ?? 'none';
  const identity = { version: opts.version, fault, build: opts.build ?? artifactName(opts.version, fault) };
  const mainUrl = `file://${(opts.mainJs ?? MAIN_JS).split(path.sep).map(encodeURIComponent).join('/')}`;
  return [
    `#!${opts.nodePath ?? process.execPath}`,
    `// guts-node simulator build ${identity.build}: version=${identity.version} fault=${fault}`,
    `'use strict';`,
    `import(${JSON.stringify(mainUrl)})`,
    `  .then(function (m) { return m.main(process.argv.slice(2), ${JSON.stringify(identity)}); })`,
    `  .catch(function (e) { process.stderr.write(String((e && e.stack) || e) + '\\n'); process.exit(1); });`,
    '',
  ].join('\n');
}

export function sha256OfFile(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

export function writeArtifact(outDir: string, version: string, fault: Fault = 'none'): ArtifactEntry {
  fs.mkdirSync(outDir, { recursive: true });
  const name = artifactName(version, fault);
  // A .cjs suffix keeps the launcher loadable even when NODE_OPTIONS registers
  // ESM loader hooks (as tap does): those reject unknown suffixes such as ".0".
  const fileName = `${name}.cjs`;
  const file = path.join(path.resolve(outDir), fileName);
  const src = launcherSource({ version, fault, build: name });
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, src, { mode: 0o755 });
  fs.chmodSync(tmp, 0o755);
  fs.renameSync(tmp, file);
  return { name, version, fault, file: fileName, path: file, sha256: sha256OfFile(file), size: fs.statSync(file).size };
}

/** Writes every build and manifest.json into outDir; returns the manifest. */
export function buildArtifacts(opts: { outDir: string }): ArtifactManifest {
  const artifacts: ArtifactEntry[] = [];
  for (const v of GOOD_VERSIONS) artifacts.push(writeArtifact(opts.outDir, v));
  for (const b of BAD_BUILDS) artifacts.push(writeArtifact(opts.outDir, b.version, b.fault));
  const manifest: ArtifactManifest = { created_at: new Date().toISOString(), node: process.execPath, main: MAIN_JS, artifacts };
  fs.writeFileSync(path.join(opts.outDir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  return manifest;
}

export function findArtifact(m: ArtifactManifest, version: string, fault: Fault = 'none'): ArtifactEntry {
  const a = m.artifacts.find((x) => x.version === version && x.fault === fault);
  if (!a) throw new Error(`no artifact ${artifactName(version, fault)} in manifest`);
  return a;
}

/** Installs a binary atomically with mode 0755 (copy to a temp name, then rename). */
export function installBinary(artifactPath: string, dest: string): void {
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  const tmp = `${dest}.tmp-${process.pid}`;
  fs.copyFileSync(artifactPath, tmp);
  fs.chmodSync(tmp, 0o755);
  fs.renameSync(tmp, dest);
}
