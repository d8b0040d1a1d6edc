/**
 * The coordinator's live page in a real browser: Debian's headless Chromium,
 * driven by playwright-core, against a real coordinator, real agents and
 * simulated nodes. A viewer sees the fleet and cannot act; an operator plans a
 * canary rollout on the page, starts it, watches it live and pauses it with the
 * page's button. Screenshots are kept in test/artifacts/page/.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Page } from 'playwright-core';
import t from 'tap';
import { api, type RolloutDetailBody, type RolloutListBody } from '@guts-upgrade/coordinator';
import { waitFor } from '@guts-upgrade/simulator';
import { makeRig, TOKEN, VIEWER_TOKEN } from './harness.js';

// test/dist/integration/page.test.js → the checkout's test/artifacts/page
const SHOTS = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'artifacts', 'page');
const CHROMIUM = process.env.GUTS_CHROMIUM ?? '/usr/bin/chromium';

const table = (page: Page, sel: string) =>
  page.$$eval(`${sel} tbody tr`, (trs) =>
    trs.map((tr) => Array.from((tr as unknown as { children: ArrayLike<{ textContent: string | null }> }).children, (td) => td.textContent ?? '')),
  );

async function signIn(page: Page, token: string): Promise<void> {
  await page.fill('#token', token);
  await page.click('#connect');
}

if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (.ci/run does), or set GUTS_CHROMIUM`);

t.test('the live page: a viewer reads, an operator plans, starts, watches and pauses a rollout', async (t) => {
  mkdirSync(SHOTS, { recursive: true });
  const shot = (page: Page, name: string) => page.screenshot({ path: join(SHOTS, name), fullPage: true });
  const rig = await makeRig(t, { n: 4 });
  await rig.waitFleetReady();
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  t.teardown(() => browser.close());

  const watch = async (page: Page) => {
    const foreign: string[] = [];
    const errors: string[] = [];
    page.on('request', (r) => {
      if (!r.url().startsWith(`${rig.url}/`)) foreign.push(r.url());
    });
    page.on('pageerror', (e) => errors.push(String(e)));
    return { foreign, errors };
  };

  // --- a viewer: the fleet with the chain's view, nothing to press
  const viewer = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const vSeen = await watch(viewer);
  const res = await viewer.goto(`${rig.url}/`);
  t.equal(res?.status(), 200, 'the coordinator serves the page at /');
  t.match(res?.headers()['content-security-policy'], /default-src 'none'; script-src 'self'/, 'under a strict content security policy');
  await shot(viewer, '1-sign-in.png');
  await signIn(viewer, 'not-a-token');
  await viewer.waitForSelector('#signin-error:has-text("E_AUTH")');
  t.pass('an unknown token is refused on the page');
  await signIn(viewer, VIEWER_TOKEN);
  await viewer.waitForSelector('#nodes tbody tr:nth-child(4)');
  t.match(await viewer.textContent('#who'), /watcher \(viewer\)/);
  const rows = await table(viewer, '#nodes');
  t.same(
    rows.map((r) => [r[0], r[2], r[3], r[4]]),
    ['v0', 'v1', 'v2', 'v3'].map((id) => [id, '1', '1.0.0', 'healthy']),
    'every node with its weight, version and health',
  );
  t.ok(
    rows.every((r) => /^v\d \S+…$/.test(r[1]!)),
    `each bound to its validator (${rows.map((r) => r[1]).join(', ')})`,
  );
  t.equal(rows.filter((r) => r[6] === 'leader').length, 1, 'one leader');
  t.match(await viewer.textContent('#chain'), /epoch 0 · weight 4 · quorum 3/, "the chain's weights");
  await viewer.fill('#plan-to', '1.1.0');
  await viewer.fill('#plan-url', rig.fleet.artifact('1.1.0').url);
  await viewer.fill('#plan-sha', rig.fleet.artifact('1.1.0').sha256);
  await viewer.click('#plan-button');
  await viewer.waitForSelector('#plan-error:has-text("E_FORBIDDEN")');
  t.ok(await viewer.isDisabled('#start-button'), "a viewer's dry run is refused and start stays disabled");
  await shot(viewer, '2-viewer-fleet.png');

  // --- an operator: the token is in this tab's memory only; a reload forgets it
  const op = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const oSeen = await watch(op);
  await op.goto(`${rig.url}/`);
  await signIn(op, TOKEN);
  await op.waitForSelector('#nodes tbody tr:nth-child(4)');
  await op.reload();
  t.ok(await op.isVisible('#signin'), 'after a reload the page asks for the token again');
  await signIn(op, TOKEN);
  await op.waitForSelector('#nodes tbody tr:nth-child(4)');
  t.match(await op.textContent('#who'), /it \(operator\)/);

  const a = rig.fleet.artifact('1.1.0');
  await op.fill('#plan-to', a.version);
  await op.fill('#plan-url', a.url);
  await op.fill('#plan-sha', a.sha256);
  await op.selectOption('#plan-strategy', 'canary');
  await op.fill('#plan-canary', 'v1');
  await op.fill('#plan-soak', '120000');
  await op.click('#plan-button');
  await op.waitForSelector('#plan-out:has-text("wave 1: v1")');
  t.match(await op.textContent('#plan-out'), /plan canary: 1\.0\.0 → 1\.1\.0 \(minor\) n=4 f=1[\s\S]*weight 1 down, slack left 0/, 'the dry run, by weight');
  t.same((await api<RolloutListBody>(rig.op, 'GET', '/api/v1/rollouts')).rollouts, [], 'a dry run starts nothing');
  await shot(op, '3-operator-plan.png');

  await op.click('#start-button');
  await op.waitForSelector('#rollout-title[data-state="soaking"]', { timeout: 120_000 });
  const id = (await api<RolloutListBody>(rig.op, 'GET', '/api/v1/rollouts')).rollouts[0]!.id;
  t.match(await op.textContent('#rollout-title'), new RegExp(`${id} · canary · 1\\.0\\.0 → 1\\.1\\.0 · soaking`), 'the rollout, live');
  await op.waitForSelector('#events li:has-text("canary.soaking")');
  const steps = await table(op, '#steps');
  t.same(steps.find((r) => r[0] === 'v1')?.[1], 'upgraded', 'the canary upgraded, the others pending');
  t.ok(steps.filter((r) => r[0] !== 'v1').every((r) => r[1] === 'pending'));
  await shot(op, '4-operator-soaking.png');

  // The viewer sees the same rollout and may press nothing.
  await viewer.waitForSelector('#rollout-title[data-state="soaking"]');
  for (const action of ['pause', 'resume', 'abort', 'rollback', 'approve']) t.ok(await viewer.isDisabled(`#action-${action}`), `viewer: ${action} disabled`);
  await shot(viewer, '5-viewer-rollout.png');

  t.notOk(await op.isDisabled('#action-pause'), 'operator: pause enabled during the soak');
  t.ok(await op.isDisabled('#action-resume'), 'operator: resume disabled while not paused');
  await op.click('#action-pause');
  const paused = await waitFor(
    async () => {
      const d = await api<RolloutDetailBody>(rig.op, 'GET', `/api/v1/rollouts/${id}`);
      return d.rollout.state === 'paused' ? d : undefined;
    },
    { what: 'the rollout paused by the page', timeoutMs: 20_000 },
  );
  t.equal(paused.rollout.reason, 'from the page', "the page's button paused it");
  await op.waitForSelector('#rollout-title[data-state="paused"]');
  t.notOk(await op.isDisabled('#action-resume'), 'resume enabled once paused');
  await shot(op, '6-operator-paused.png');

  // Abort from the page ends it (the canary stays on 1.1.0, as abort documents).
  await op.click('#action-abort');
  await op.waitForSelector('#rollout-title[data-state="aborted"]');
  t.pass('aborted from the page');

  t.same([...vSeen.foreign, ...oSeen.foreign], [], 'every request went to the coordinator itself');
  t.same([...vSeen.errors, ...oSeen.errors], [], 'no script error on the page');
  t.comment(`screenshots in ${SHOTS}`);
});
