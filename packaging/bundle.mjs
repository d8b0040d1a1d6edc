/**
 * One CLI entry (compiled JS in dist/) into one ESM file with all its JS
 * dependencies; better-sqlite3 stays outside, as it carries a native addon.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as esbuild from 'esbuild';

function readJson(file) {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

/**
 * The two version.ts files read their package.json through createRequire at run
 * time, which a bundle cannot follow; the bundle gets the version as a constant.
 */
const inlineVersion = {
  name: 'inline-version',
  setup(build) {
    build.onLoad({ filter: /[\\/]packages[\\/][a-z]+[\\/]dist[\\/]src[\\/]version\.js$/ }, (args) => {
      const pkg = readJson(path.resolve(path.dirname(args.path), '../../package.json'));
      return { contents: `export const PRODUCT_VERSION = ${JSON.stringify(pkg.version)};\n`, loader: 'js' };
    });
  },
};

// CommonJS dependencies inside an ESM bundle still call require() and read __dirname.
const BANNER = [
  "import { createRequire as __gutsCreateRequire } from 'node:module';",
  "import { fileURLToPath as __gutsFileURLToPath } from 'node:url';",
  "import { dirname as __gutsDirname } from 'node:path';",
  'const require = __gutsCreateRequire(import.meta.url);',
  'const __gutsFilename = __gutsFileURLToPath(import.meta.url);',
  'const __gutsDirnameValue = __gutsDirname(__gutsFilename);',
].join('\n');

// A bundle must never carry the test kit, the simulator, tests or the test runner.
const FORBIDDEN = /(^|[\\/])(packages[\\/](simulator|testkit)|test[\\/]|node_modules[\\/](tap|@tapjs|typescript)[\\/])|[\\/]demo[\\/]/;

/**
 * Code reached only through a dynamic import (the agent's container drivers
 * with dockerode, tuf-js, tar) goes to chunk files beside the entry, so an
 * agent that never uses them neither parses nor holds them: the entry is about
 * a sixth of the single file it replaced, and the idle agent's memory shrinks
 * by the rest (bench/footprint.js).
 */
export async function bundle(entry, outfile) {
  const result = await esbuild.build({
    entryPoints: { [path.basename(outfile, '.mjs')]: entry },
    outdir: path.dirname(outfile),
    outExtension: { '.js': '.mjs' },
    splitting: true,
    chunkNames: 'chunks/[name]-[hash]',
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    // ssh2 (dockerode's SSH transport, which the agent never uses: it talks to the engine's unix socket) tries
    // its native addons inside try/catch and falls back to plain JS: left out of the bundle, they are never there.
    external: ['better-sqlite3', 'bufferutil', 'utf-8-validate', '*.node', 'cpu-features'],
    banner: { js: BANNER },
    define: { __dirname: '__gutsDirnameValue', __filename: '__gutsFilename' },
    plugins: [inlineVersion],
    metafile: true,
    legalComments: 'none',
    logLevel: 'warning',
  });
  const bad = Object.keys(result.metafile.inputs).filter((f) => FORBIDDEN.test(f));
  if (bad.length > 0) throw new Error(`${entry} bundles test or simulator code: ${bad.slice(0, 5).join(', ')}`);
}
