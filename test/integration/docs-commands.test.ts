/**
 * Every command line README.md and docs/ show, run as written against a live
 * coordinator, real agents and simulated nodes: only placeholders (URL, HEX, <hex>,
 * <id>, the example release host, the /etc paths) are filled in, and a rollout named
 * by its version alone gets its artifact while the fleet's agents cannot resolve
 * versions (see fill). The programs are found on PATH under the names the docs use.
 * A documented command that does not parse, or that this test has no rule for, fails it.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { api } from '@guts-upgrade/coordinator';
import type { FleetBody, RolloutDetailBody } from '@guts-upgrade/coordinator';
import { freePorts, waitFor } from '@guts-upgrade/simulator';
import { docCommands, type DocCommand } from '../src/docs/commands.js';
import { makeRig, TOKEN, type Rig } from './harness.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

const BINS: Record<string, string> = {
  'guts-upgrade': 'packages/coordinator/dist/src/cli.js',
  'guts-upgrade-coordinator': 'packages/coordinator/dist/src/server-cli.js',
  'guts-upgrade-agent': 'packages/agent/dist/src/cli.js',
};

/** A bin dir with the three programs under their documented names, as a package install puts them on PATH. */
function binDir(dir: string): string {
  const bin = path.join(dir, 'bin');
  mkdirSync(bin, { recursive: true });
  for (const [name, rel] of Object.entries(BINS)) {
    const f = path.join(bin, name);
    writeFileSync(f, `#!/bin/sh\nexec "${process.execPath}" "${path.join(ROOT, rel)}" "$@"\n`);
    chmodSync(f, 0o755);
  }
  return bin;
}

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function sh(line: string, env: NodeJS.ProcessEnv, timeoutMs = 180_000): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const p = spawn('sh', ['-c', line], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.once('error', reject);
    p.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

interface Ctx {
  rig: Rig;
  env: NodeJS.ProcessEnv;
  /** The node whose agent the host-side commands drive (its daemon stopped meanwhile). */
  hostNode: Rig['fleet']['nodes'][number];
  coordinatorConfig: string;
  rolloutId: string | null;
  backupId: string | null;
  /** The release repository's timestamp version before `release timestamp` runs. */
  timestampVersion?: number;
}

/** Fills the placeholders the docs use; anything left unfilled fails the test. */
function fill(c: DocCommand, ctx: Ctx): string {
  const version = /--to\s+(\S+)/.exec(c.text)?.[1];
  const art = version ? ctx.rig.fleet.artifact(version) : null;
  let s = c.text;
  if (art) {
    s = s
      .replace(/https:\/\/releases\.example\/guts-node-\S+/g, art.url)
      .replace(/\bURL\b/g, art.url)
      .replace(/\bHEX\b|<hex>/g, art.sha256);
  }
  s = s.replaceAll('/etc/guts-upgrade/coordinator.yaml', ctx.coordinatorConfig);
  // The release owner's machine: the repository in the rig's dir, the binary the fleet's 1.1.0.
  s = s.replaceAll('/srv/releases', releasesDir(ctx));
  const signing = /--file guts-node --version (\S+)/.exec(s);
  if (signing) s = s.replace('--file guts-node', `--file ${buildFile(ctx, signing[1]!)}`);
  if (s.includes('<id>')) {
    const id = c.path === 'guts-upgrade-agent backup restore' ? ctx.backupId : ctx.rolloutId;
    if (!id) throw new Error(`${c.where}: no id to fill in for "${c.text}"`);
    s = s.replaceAll('<id>', id);
  }
  const left = /<[a-z-]+>|\bURL\b|\bHEX\b|releases\.example|\/etc\/guts-upgrade/.exec(s);
  if (left) throw new Error(`${c.where}: placeholder ${left[0]} left unfilled in "${c.text}"`);
  return s;
}

const releasesDir = (ctx: Ctx) => path.join(ctx.rig.dir, 'srv', 'releases');

/** The fleet's own build of `version`, as its artifact server holds it. */
function buildFile(ctx: Ctx, version: string): string {
  return path.join(ctx.rig.fleet.dir, 'artifacts', path.basename(new URL(ctx.rig.fleet.artifact(version).url).pathname));
}

type Md = { signed: { version: number; expires: string; roles?: Record<string, { threshold: number }>; targets?: Record<string, TargetMd> } };
type TargetMd = { length: number; hashes: { sha256: string }; custom: Record<string, string> };

function metadata(ctx: Ctx, role: string): Md {
  return JSON.parse(readFileSync(path.join(releasesDir(ctx), 'metadata', `${role}.json`), 'utf8')) as Md;
}

function expect(ok: boolean, what: string): void {
  if (!ok) throw new Error(what);
}

async function rollout(ctx: Ctx): Promise<RolloutDetailBody> {
  return api<RolloutDetailBody>(ctx.rig.op, 'GET', `/api/v1/rollouts/${ctx.rolloutId}`);
}

async function waitState(ctx: Ctx, states: string[]): Promise<void> {
  await waitFor(async () => states.includes((await rollout(ctx)).rollout.state), {
    what: `rollout ${ctx.rolloutId} in ${states.join('/')}`,
    timeoutMs: 180_000,
    intervalMs: 200,
  });
}

async function fleetSettled(ctx: Ctx): Promise<void> {
  await waitFor(
    async () => {
      const f = await api<FleetBody>(ctx.rig.op, 'GET', '/api/v1/fleet');
      return f.down.length === 0 && f.nodes.every((n) => n.connected && n.version) && f.leader;
    },
    { what: 'every agent connected and its node healthy', timeoutMs: 120_000, intervalMs: 200 },
  );
}

/** Host-side agent commands run with that host's daemon stopped; the coordinator's commands with it running. */
async function hostMode(ctx: Ctx, on: boolean): Promise<void> {
  const n = ctx.hostNode;
  const running = !!n.agent && n.agent.exitCode === null && n.agent.signalCode === null;
  if (on && running) await ctx.rig.fleet.stopAgent(n);
  if (!on && !running) {
    ctx.rig.fleet.startAgent(n);
    await fleetSettled(ctx);
  }
}

interface Rule {
  /** Waits for the state the command is documented in. */
  before?(ctx: Ctx): Promise<void>;
  /** The exit code expected, decided right before the run. */
  expect?(ctx: Ctx): Promise<number>;
  after?(ctx: Ctx, ran: Ran): Promise<void>;
}

const OK: Rule = {};

/** One rule per documented command path; a path without a rule fails the test, so new docs get covered. */
const RULES: Record<string, Rule> = {
  'guts-upgrade-agent config validate': OK,
  'guts-upgrade-agent status': OK,
  'guts-upgrade-agent upgrade': {
    async after(ctx) {
      const h = await fetch(`${ctx.hostNode.apiUrl}/health`).then((r) => r.json() as Promise<{ version: string }>);
      if (h.version !== '1.1.0') throw new Error(`the node runs ${h.version} after the documented upgrade`);
    },
  },
  'guts-upgrade-agent backup create': OK,
  'guts-upgrade-agent backup list': {
    async after(ctx) {
      const r = await sh('guts-upgrade-agent backup list --json', ctx.env);
      const rows = JSON.parse(r.stdout) as { id: string; status: string; createdAt: string }[];
      ctx.backupId =
        rows
          .filter((b) => b.status === 'complete')
          .sort((a, b) => a.createdAt.localeCompare(b.createdAt))
          .at(-1)?.id ?? null;
    },
  },
  'guts-upgrade-agent backup restore': OK,
  'guts-upgrade-agent rollback': OK,
  'guts-upgrade-agent doctor': OK, // a healthy host: every check passes or has nothing to judge
  'guts-upgrade-agent help upgrade': OK,
  'guts-upgrade-agent': OK, // --version
  'guts-upgrade-coordinator config validate': OK,
  'guts-upgrade-coordinator': OK, // the daemon: see runDaemon
  'guts-upgrade help': OK,
  'guts-upgrade help rollout': OK,
  'guts-upgrade rollout start': {
    async after(ctx, ran) {
      const id = /^started (\S+)/m.exec(ran.stdout)?.[1];
      if (!id) throw new Error(`rollout start printed no id: ${ran.stdout}`);
      ctx.rolloutId = id;
    },
  },
  'guts-upgrade': OK, // --version
  'guts-upgrade nodes add': OK,
  'guts-upgrade nodes list': OK,
  'guts-upgrade nodes remove': OK,
  'guts-upgrade fleet': OK,
  'guts-upgrade plan': OK,
  'guts-upgrade rollout list': OK,
  'guts-upgrade rollout status': OK,
  'guts-upgrade rollout events': OK,
  // Documented for a canary in its soak, or a rollout still running.
  'guts-upgrade rollout pause': { before: (ctx) => waitState(ctx, ['soaking', 'running']) },
  'guts-upgrade rollout watch': {
    // A paused rollout: watch hands back with exit 5; otherwise it follows to the end.
    expect: async (ctx) => ((await rollout(ctx)).rollout.state === 'paused' ? 5 : 0),
  },
  'guts-upgrade rollout resume': OK,
  'guts-upgrade rollout abort': OK,
  'guts-upgrade rollout rollback': { after: (ctx) => waitState(ctx, ['rolled_back']) },
  'guts-upgrade rollout approve': { before: (ctx) => waitState(ctx, ['awaiting_approval']) },
  // The release owner's commands (runbook.md), checked in what they wrote.
  'guts-upgrade release init': {
    async after(ctx) {
      const root = metadata(ctx, 'root').signed;
      expect(root.roles?.root?.threshold === 2 && root.roles?.targets?.threshold === 2, `root.json thresholds: ${JSON.stringify(root.roles)}`);
    },
  },
  'guts-upgrade release add': {
    async after(ctx, ran) {
      // A registry release (`--image`): a pointer to the reference, which is signed into the custom fields too.
      const signed = /^signed (guts-node\/(\S+)\/guts-node): image (\S+),/m.exec(ran.stdout);
      if (signed) {
        const [, name, , ref] = signed;
        const target = metadata(ctx, 'targets').signed.targets?.[name!];
        const pointer = readFileSync(path.join(releasesDir(ctx), 'targets', name!));
        expect(target?.custom.image === ref, `custom fields: ${JSON.stringify(target?.custom)}`);
        expect(target?.hashes.sha256 === createHash('sha256').update(pointer).digest('hex'), `signed target: ${JSON.stringify(target)}`);
        expect((JSON.parse(pointer.toString()) as { image?: string }).image === ref, `pointer: ${pointer.toString()}`);
        return;
      }
      const target = metadata(ctx, 'targets').signed.targets?.['guts-node/1.1.0/guts-node'];
      const file = readFileSync(buildFile(ctx, '1.1.0'));
      expect(target?.hashes.sha256 === createHash('sha256').update(file).digest('hex'), `signed target: ${JSON.stringify(target)}`);
      expect(
        target?.custom.pathKind === 'minor' && target.custom.migration === 'automatic' && target.custom.minFrom === '1.0.0',
        `custom fields: ${JSON.stringify(target?.custom)}`,
      );
    },
  },
  'guts-upgrade release timestamp': {
    async before(ctx) {
      ctx.timestampVersion = metadata(ctx, 'timestamp').signed.version;
    },
    async after(ctx) {
      const ts = metadata(ctx, 'timestamp').signed;
      const left = Date.parse(ts.expires) - Date.now();
      expect(ts.version === ctx.timestampVersion! + 1 && left > 0 && left <= 86_400_000, `timestamp v${ts.version} expires ${ts.expires}`);
    },
  },
};

/** The daemon line: started as written, ready on its API, then stopped by SIGTERM with exit 0. */
async function runDaemon(line: string, env: NodeJS.ProcessEnv, port: number): Promise<Ran> {
  const p = spawn('sh', ['-c', `exec ${line}`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
  try {
    await waitFor(
      async () =>
        p.exitCode !== null ||
        (await api({ url: `http://127.0.0.1:${port}` }, 'GET', '/health/ready').then(
          () => true,
          () => false,
        )),
      { what: 'the coordinator daemon ready', timeoutMs: 30_000, intervalMs: 200 },
    );
  } finally {
    p.kill('SIGTERM');
  }
  return { code: await exited, stdout: '', stderr };
}

t.test('every command line in README.md and docs/ runs as written', async (t) => {
  const all = docCommands(ROOT);
  const commands = all.filter((c) => c.kind === 'block');
  t.ok(commands.length >= 20, `the docs show ${commands.length} command lines`);
  const unruled = commands.filter((c) => !(c.path in RULES));
  t.same(
    unruled.map((c) => `${c.where} ${c.path}`),
    [],
    'every documented command has a rule in this test',
  );

  const rig = await makeRig(t, { n: 4, child: true });
  await rig.waitFleetReady();
  const [coordPort] = await freePorts(1);
  const coordinatorConfig = path.join(rig.dir, 'documented-coordinator.yaml');
  writeFileSync(
    coordinatorConfig,
    [
      `listen: { host: 127.0.0.1, port: ${coordPort} }`,
      `db: ${path.join(rig.dir, 'documented.db')}`,
      'operators:',
      '  - { name: alice, token: docs-test-operator-token, role: operator }',
      'logLevel: warn',
      '',
    ].join('\n'),
  );
  const hostNode = rig.fleet.nodes.at(-1)!;
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${binDir(rig.dir)}:${process.env.PATH}` };
  delete env.NODE_OPTIONS;
  for (const k of Object.keys(env)) if (k.startsWith('TAP')) delete env[k];
  Object.assign(env, { GUTS_UPGRADE_URL: rig.url, GUTS_UPGRADE_TOKEN: TOKEN, GUTS_UPGRADE_AGENT_CONFIG: hostNode.agentConfig, GUTS_UPGRADE_WATCH_MS: '200' });
  // Every agent of the fleet resolves versions through its release repository: documented rollouts name the version alone.
  const ctx: Ctx = { rig, env, hostNode, coordinatorConfig, rolloutId: null, backupId: null };

  for (const c of commands) {
    const asksHelp = /(^|\s)(help|--help|-h)(\s|$)/.test(c.text);
    // The program's own version (`guts-upgrade --version`), not a flag's value such as `release add --version 1.1.0`.
    const asksVersion = /^\S+\s+(--version|-V)$/.test(c.text);
    // Help and version change nothing and need no particular state.
    const rule = asksHelp || asksVersion ? OK : RULES[c.path];
    if (!rule) continue;
    await hostMode(ctx, c.program === 'guts-upgrade-agent');
    await rule.before?.(ctx);
    const line = fill(c, ctx);
    const expected = rule.expect ? await rule.expect(ctx) : 0;
    const ran = c.path === 'guts-upgrade-coordinator' ? await runDaemon(line, env, coordPort!) : await sh(line, env);
    t.equal(ran.code, expected, `${c.where}: ${c.text}`, { stdout: ran.stdout.slice(-2000), stderr: ran.stderr.slice(-2000) });
    if (ran.code !== expected) break; // later lines depend on this one's effect
    if (asksHelp) t.match(ran.stdout, /Usage: /, `${c.where}: prints usage`);
    if (asksVersion) t.match(ran.stdout.trim(), /^\d+\.\d+\.\d+/, `${c.where}: prints a version`);
    await rule.after?.(ctx, ran);
  }
  await hostMode(ctx, false);
  const final = await rollout(ctx);
  t.equal(final.rollout.state, 'completed', 'the last documented rollout completed');

  // Commands named in prose: each exists, and takes every flag the prose gives it.
  for (const c of all.filter((x) => x.kind === 'inline')) {
    const help = await sh(`${c.path} --help`, env);
    t.equal(help.code, 0, `${c.where}: \`${c.text}\` is a command`, { stderr: help.stderr.slice(-500) });
    for (const flag of c.text.match(/--[a-z][a-z0-9-]*/g) ?? []) t.match(help.stdout, flag, `${c.where}: ${c.path} takes ${flag}`);
  }
});
