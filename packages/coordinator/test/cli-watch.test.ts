import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import t from 'tap';
import { runCli } from '../src/cli.js';
import { colourAllowed, renderWatchFrame, type WatchFrame } from '../src/cli-watch.js';
import { api, type FleetBody, type RolloutDetailBody } from '../src/client.js';
import { buildConfig } from '../src/config.js';
import { startCoordinator } from '../src/server.js';
import { fleetOf, rolloutOf, stepsOf } from './helpers.js';

const ESC = '\x1b[';
// Built at run time: a control character in a regex literal reads as a mistake.
const E = `${String.fromCharCode(27)}\\[`;
const REDRAW = new RegExp(`${E}\\d+F${E}J`);
const SGR = new RegExp(`${E}\\d+m`, 'g');

t.test('colour only at a terminal, never with NO_COLOR or a dumb terminal', async (t) => {
  t.equal(colourAllowed({}, true), true);
  t.equal(colourAllowed({ NO_COLOR: '1' }, true), false);
  t.equal(colourAllowed({ TERM: 'dumb' }, true), false);
  t.equal(colourAllowed({}, false), false, 'a pipe gets no colour');
  t.equal(colourAllowed({ NO_COLOR: '' }, true), true, 'an empty NO_COLOR does not count (no-color.org)');
});

t.test('the frame: each node, the soak countdown, the slack left, the latest events', async (t) => {
  const rollout = rolloutOf(['v0', 'v1', 'v2', 'v3'], { strategy: 'canary', state: 'soaking' }, { canary: 'v1', soakMs: 120_000 });
  rollout.data = { soakStartedAt: 1_000_000 };
  const steps = stepsOf(['v0', 'v1', 'v2', 'v3']).map((s) =>
    s.nodeId === 'v1' ? { ...s, state: 'upgraded' as const, downtimeMs: 1830, progress: 'commit:done' } : s,
  );
  const fleet = { ...fleetOf(4), chain: { slack: 1, slackAfterInFlight: 0, quorumWeight: 3, totalWeight: 4 } } as unknown as FleetBody;
  const frame: WatchFrame = { detail: { rollout, steps }, fleet, recent: ['12:00:01.000 canary.soaking v1'], now: 1_000_000 + 78_000, colour: false };
  const plain = renderWatchFrame(frame);
  t.match(plain, /rollout r1 {2}canary {2}1\.0\.0 -> 1\.1\.0 {2}soaking/);
  t.match(plain, /soak: 42 s left of 120 s on v1/, 'the countdown');
  t.match(plain, /slack: 1 weight above quorum 3 of 4, 0 after the nodes in flight/, 'the slack left');
  t.match(plain, /v1 +upgraded +commit:done +1830ms/);
  t.match(plain, /latest:\n {4}12:00:01\.000 canary\.soaking v1/);
  t.notOk(plain.includes('\x1b'), 'no control character without colour');
  const coloured = renderWatchFrame({ ...frame, colour: true });
  t.ok(coloured.includes(`${ESC}32mupgraded`), 'an upgraded node in green');
  t.equal(coloured.replace(SGR, ''), plain, 'colour adds nothing but colour');
});

t.test('watch against a live coordinator: redrawn in place on a terminal, lines in a pipe, exit 5 on pause', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'guc-watch-'));
  const OP = 'watch-operator-token-0123';
  const c = await startCoordinator(
    buildConfig({
      listen: { host: '127.0.0.1', port: 0 },
      db: join(dir, 'c.db'),
      operators: [{ name: 'alice', token: OP, role: 'operator' }],
      windows: [{ name: 'never-now', cron: '0 0 1 1 *', duration: '1m' }],
      tickMs: 20,
    }),
    { log: pino({ level: 'silent' }) },
  );
  t.teardown(async () => {
    await c.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const op = { url: c.url!, token: OP };
  for (const id of ['v0', 'v1', 'v2', 'v3']) await api(op, 'POST', '/api/v1/nodes', { id });
  // Outside its window the rollout is scheduled; nothing is dispatched, so no agent is needed.
  const run = async (isTTY: boolean, env: NodeJS.ProcessEnv = {}) => {
    const r = await api<RolloutDetailBody>(op, 'POST', '/api/v1/rollouts', {
      target: { version: '1.1.0', url: 'http://127.0.0.1:9/guts-node', sha256: 'a'.repeat(64) },
      options: { window: 'never-now' },
    });
    let out = '';
    const watching = runCli(
      ['rollout', 'watch', r.rollout.id],
      { GUTS_UPGRADE_URL: c.url!, GUTS_UPGRADE_TOKEN: OP, GUTS_UPGRADE_WATCH_MS: '40', ...env },
      (s) => (out += s),
      () => {},
      isTTY,
    );
    await new Promise((res) => setTimeout(res, 400));
    await api(op, 'POST', `/api/v1/rollouts/${r.rollout.id}/pause`, { reason: 'checking' });
    const code = await watching;
    await api(op, 'POST', `/api/v1/rollouts/${r.rollout.id}/abort`, {});
    return { code, out, id: r.rollout.id };
  };

  const tty = await run(true);
  t.equal(tty.code, 5, 'paused: exit 5');
  t.match(tty.out, REDRAW, 'the frame is redrawn in place');
  t.match(tty.out, new RegExp(`rollout ${tty.id}`));
  t.ok(tty.out.includes(`${ESC}33mpaused`), 'paused in yellow');
  t.match(tty.out, /is paused: checking\nit waits for an operator/, 'then the reason and the commands');

  const noColour = await run(true, { NO_COLOR: '1' });
  t.match(noColour.out, REDRAW, 'NO_COLOR still redraws');
  t.notMatch(noColour.out, new RegExp(SGR.source), 'but never colours');

  const pipe = await run(false);
  t.equal(pipe.code, 5);
  t.notOk(pipe.out.includes('\x1b'), 'a pipe gets plain lines');
  t.match(pipe.out, /rollout scheduled -> paused: checking|rollout \S+ -> paused: checking/, 'one line per event');
});
