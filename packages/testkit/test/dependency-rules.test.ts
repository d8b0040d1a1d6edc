/**
 * The dependency rules of docs/architecture.md, checked on the source tree:
 * what ships (protocol, agent, coordinator) never reaches the simulator or the
 * test kit, agent and coordinator never reach each other, protocol reaches
 * none of them. Each rule is first shown to catch a violation in a scratch
 * tree, so this test can fail.
 */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));

/** Which workspaces each shipped package may import (besides itself and npm packages). */
const MAY_IMPORT: Record<string, readonly string[]> = {
  protocol: [],
  agent: ['protocol'],
  coordinator: ['protocol'],
};
const WORKSPACES = ['protocol', 'simulator', 'agent', 'coordinator', 'testkit'];

function tsFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => path.join(e.parentPath, e.name));
}

/** Module specifiers of static imports, re-exports and dynamic imports; `null` for a dynamic import of a computed name. */
function specifiers(source: string): (string | null)[] {
  const out: (string | null)[] = [];
  for (const m of source.matchAll(/\b(?:from|import)\s*['"]([^'"]+)['"]/g)) out.push(m[1]!);
  for (const m of source.matchAll(/\bimport\(\s*([^)]*)\)/g)) {
    const lit = /^['"]([^'"]+)['"]$/.exec(m[1]!.trim());
    out.push(lit ? lit[1]! : null);
  }
  return out;
}

/** The rule violations under root/packages, one line each. */
function violations(root: string): string[] {
  const found: string[] = [];
  for (const [pkg, allowed] of Object.entries(MAY_IMPORT)) {
    const src = path.join(root, 'packages', pkg, 'src');
    for (const file of tsFiles(src)) {
      const rel = path.relative(root, file);
      for (const spec of specifiers(fs.readFileSync(file, 'utf8'))) {
        if (spec === null) {
          found.push(`${rel}: imports a computed module name (the compiler cannot check it)`);
          continue;
        }
        const ws = /^@guts-upgrade\/([^/]+)/.exec(spec)?.[1];
        if (ws && ws !== pkg && !allowed.includes(ws)) found.push(`${rel}: imports ${spec}`);
        if (spec.startsWith('.') && !path.resolve(path.dirname(file), spec).startsWith(src + path.sep)) {
          found.push(`${rel}: reaches outside its package's src with ${spec}`);
        }
      }
    }
    const manifest = JSON.parse(fs.readFileSync(path.join(root, 'packages', pkg, 'package.json'), 'utf8')) as {
      dependencies?: Record<string, string>;
      devDependencies?: Record<string, string>;
      exports?: Record<string, string>;
    };
    for (const dep of Object.keys(manifest.dependencies ?? {})) {
      const ws = /^@guts-upgrade\/([^/]+)$/.exec(dep)?.[1];
      if (ws && !allowed.includes(ws)) found.push(`packages/${pkg}/package.json: depends on ${dep}`);
    }
    if (manifest.devDependencies?.['@guts-upgrade/testkit']) found.push(`packages/${pkg}/package.json: depends on @guts-upgrade/testkit`);
    for (const key of Object.keys(manifest.exports ?? {})) {
      if (key.includes('*')) found.push(`packages/${pkg}/package.json: exports the pattern ${key}, not named entry points`);
    }
  }
  return found;
}

t.test('the rules catch each kind of violation', async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'guts-deprules-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const write = (rel: string, text: string) => {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), text);
  };
  write('packages/protocol/package.json', JSON.stringify({ dependencies: { '@guts-upgrade/agent': '0.1.0' } }));
  write('packages/protocol/src/a.ts', "import { x } from './b.js';\nexport * from '@guts-upgrade/simulator';\n");
  write('packages/agent/package.json', JSON.stringify({ exports: { '.': './dist/src/index.js', './*': './dist/src/*.js' } }));
  write('packages/agent/src/a.ts', "import type { Coordinator } from '@guts-upgrade/coordinator';\nimport '../../simulator/dist/src/index.js';\n");
  write('packages/coordinator/package.json', JSON.stringify({ devDependencies: { '@guts-upgrade/testkit': '0.1.0' } }));
  write(
    'packages/coordinator/src/demo/fleet.ts',
    "const name = '@guts-upgrade/simulator';\nconst sim = await import(name);\nimport { startSimFleet } from '@guts-upgrade/testkit';\n",
  );
  t.same(violations(root).sort(), [
    'packages/agent/package.json: exports the pattern ./*, not named entry points',
    'packages/agent/src/a.ts: imports @guts-upgrade/coordinator',
    "packages/agent/src/a.ts: reaches outside its package's src with ../../simulator/dist/src/index.js",
    'packages/coordinator/package.json: depends on @guts-upgrade/testkit',
    'packages/coordinator/src/demo/fleet.ts: imports @guts-upgrade/testkit',
    'packages/coordinator/src/demo/fleet.ts: imports a computed module name (the compiler cannot check it)',
    'packages/protocol/package.json: depends on @guts-upgrade/agent',
    'packages/protocol/src/a.ts: imports @guts-upgrade/simulator',
  ]);
});

t.test('the shipped packages keep the rules', async (t) => {
  t.ok(
    WORKSPACES.every((w) => fs.existsSync(path.join(ROOT, 'packages', w, 'package.json'))),
    `found the workspaces under ${ROOT}`,
  );
  t.ok(tsFiles(path.join(ROOT, 'packages', 'agent', 'src')).length > 10, 'read the agent sources');
  t.same(violations(ROOT), [], 'no violations');
});

t.test('the test kit is private and nothing shipped depends on it', async (t) => {
  const kit = JSON.parse(fs.readFileSync(path.join(ROOT, 'packages', 'testkit', 'package.json'), 'utf8')) as { private?: boolean };
  t.equal(kit.private, true, 'never published');
  for (const pkg of Object.keys(MAY_IMPORT)) {
    const text = fs.readFileSync(path.join(ROOT, 'packages', pkg, 'package.json'), 'utf8');
    t.notMatch(text, /@guts-upgrade\/testkit/, `${pkg} does not name the test kit`);
  }
});
