/**
 * npm run demo: a simulated 4-validator network with a real agent per node and
 * the coordinator on a local SQLite file; a canary then rolling upgrade
 * 1.0.0 -> 1.1.0 with live progress, then a summary. Leaves nothing running.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { api, buildConfig, startCoordinator, type RunningCoordinator } from '@guts-upgrade/coordinator';
import type { EventsBody, FleetBody, NodeRegisteredBody, PlanBody, RolloutDetailBody } from '@guts-upgrade/coordinator';
import { FAST_TIMINGS, removeDir, startSimFleet, type SimFleet } from './fleet.js';

const TOKEN = 'demo-operator-token-0000';
const say = (s: string) => process.stdout.write(`${s}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'guts-upgrade-demo-'));
  let coord: RunningCoordinator | null = null;
  let fleet: SimFleet | null = null;
  const stop = async () => {
    await fleet?.close().catch(() => undefined);
    await coord?.close().catch(() => undefined);
    removeDir(dir);
  };
  process.once('SIGINT', () => void stop().then(() => process.exit(130)));
  try {
    coord = await startCoordinator(
      buildConfig({
        listen: { host: '127.0.0.1', port: 0 },
        db: join(dir, 'coordinator.db'),
        operators: [{ name: 'demo', token: TOKEN, role: 'operator' }],
        heartbeat: { intervalMs: 200, timeoutMs: 2000 },
        defaults: { stabilizationMs: 1000, soakMs: 3000, syncDistance: 5, syncTimeoutMs: 30_000 },
        tickMs: 100,
      }),
      { log: pino({ level: 'warn' }) },
    );
    const op = { url: coord.url!, token: TOKEN };
    say(`coordinator on ${coord.url} (db ${join(dir, 'coordinator.db')})`);
    const tokens: Record<string, string> = {};
    for (let i = 0; i < 4; i++) tokens[`v${i}`] = (await api<NodeRegisteredBody>(op, 'POST', '/api/v1/nodes', { id: `v${i}` })).token;
    say('registered v0..v3; starting 4 simulated validators and their agents');
    fleet = await startSimFleet({ n: 4, dir: join(dir, 'fleet'), coordinatorWsUrl: coord.url!.replace('http', 'ws'), tokens });
    const end = Date.now() + 30_000;
    for (;;) {
      const f = await api<FleetBody>(op, 'GET', '/api/v1/fleet');
      if (f.down.length === 0 && f.nodes.length === 4 && f.nodes.every((n) => n.version === '1.0.0')) {
        say(`fleet: n=${f.n} f=${f.f} quorum=${f.quorum} leader=${f.leader} versions=${JSON.stringify(f.versions)}`);
        break;
      }
      if (Date.now() > end) throw new Error('agents did not connect');
      await sleep(200);
    }
    // Signed into the fleet's release repository; the rollout names the version alone and each agent resolves it.
    fleet.artifact('1.1.0');
    say('release 1.1.0 signed with guts-upgrade release; agents trust only its pinned root');
    const body = { target: { version: '1.1.0' }, strategy: 'canary', options: { soakMs: 3000, stabilizationMs: 1000 } };
    const plan = (await api<PlanBody>(op, 'POST', '/api/v1/rollouts/plan', body)).plan;
    say(`plan (dry run): ${plan.waves.map((w: string[], i: number) => `wave ${i + 1} [${w.join(' ')}]`).join(', ')}`);
    const t0 = Date.now();
    const created = await api<RolloutDetailBody>(op, 'POST', '/api/v1/rollouts', body);
    const id = created.rollout.id;
    say(`rollout ${id} started: canary ${created.rollout.options.canary}, then rolling, leader last`);
    let after = 0;
    let detail: RolloutDetailBody;
    for (;;) {
      const ev = await api<EventsBody>(op, 'GET', `/api/v1/rollouts/${id}/events?after=${after}`);
      for (const e of ev.events) {
        after = e.seq;
        const t = ((Date.parse(e.at) - t0) / 1000).toFixed(1).padStart(5);
        if (e.type === 'node.progress') {
          if (e.data.state !== 'running') say(`  ${t}s   ${e.nodeId} ${e.data.step} ${e.data.state}`);
        } else if (!['command.sent', 'rollout.state', 'command.result'].includes(e.type)) {
          say(`  ${t}s ${e.type} ${e.nodeId ?? ''} ${e.data.code ?? ''}`);
        } else if (e.type === 'rollout.state') say(`  ${t}s rollout ${e.data.from} -> ${e.data.to}`);
      }
      detail = await api<RolloutDetailBody>(op, 'GET', `/api/v1/rollouts/${id}`);
      if (['completed', 'failed', 'aborted', 'rolled_back', 'paused'].includes(detail.rollout.state)) break;
      await sleep(300);
    }
    const t1 = Date.now();
    await sleep(500);
    const stall = fleet.maxStallMs({ from: t0, to: t1 });
    const h = fleet.history();
    const heights = h.filter((x) => x.t >= t0 && x.t <= t1).map((x) => x.height);
    say('');
    say(`summary: rollout ${id} ${detail.rollout.state} in ${((t1 - t0) / 1000).toFixed(1)}s`);
    const order = [...detail.steps].sort((a, b) => (a.dispatchSeq ?? 99) - (b.dispatchSeq ?? 99));
    say(`  order: ${order.map((s) => s.nodeId).join(' -> ')}`);
    for (const s of order)
      say(
        `  ${s.nodeId}: ${s.state}, downtime ${s.downtimeMs != null ? `${Math.round(s.downtimeMs)} ms` : '-'}${s.code ? ` ${s.code}: ${s.message ?? ''}` : ''}`,
      );
    const f = await api<FleetBody>(op, 'GET', '/api/v1/fleet');
    say(`  versions now: ${JSON.stringify(f.versions)}`);
    say(
      `  chain: finalized ${heights.length ? Math.min(...heights) : '?'} -> ${heights.length ? Math.max(...heights) : '?'} during the rollout; longest gap between finalized blocks ${stall} ms (block interval ${FAST_TIMINGS.block_interval_ms} ms) -> ${stall < 2000 ? 'never stalled' : 'STALLED'}`,
    );
    return detail.rollout.state === 'completed' ? 0 : 1;
  } finally {
    await stop();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`demo failed: ${(err as Error).stack}\n`);
    process.exit(1);
  },
);
