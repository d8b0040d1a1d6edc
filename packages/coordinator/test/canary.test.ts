import t from 'tap';
import type { NodeMetrics } from '@guts-upgrade/protocol';
import { DEFAULT_CANARY_LIMITS, judgeCanary, type CanaryLimits } from '../src/canary.js';
import { fleetOf, rolloutOf, stepsOf, World } from './helpers.js';

const m = (requestsTotal: number, errorsTotal: number, latencyMs: number | null = 2): NodeMetrics => ({
  requestsTotal,
  errorsTotal,
  latencyMs,
  scrapedAt: '2026-01-01T00:00:00.000Z',
});
const L: CanaryLimits = { ...DEFAULT_CANARY_LIMITS };
const peers = (n = 3, req = 1000, err = 10, lat = 2) =>
  Array.from({ length: n }, (_, i) => ({ nodeId: `p${i}`, start: { requestsTotal: 0, errorsTotal: 0 }, now: m(req, err, lat) }));

t.test('judgeCanary: the canary against the nodes still on the old version', async (t) => {
  // same error rate and latency as the peers: passes
  let v = judgeCanary({ canary: { start: { requestsTotal: 100, errorsTotal: 1 }, now: m(1100, 11, 2.5) }, reference: peers(), baseline: null, limits: L });
  t.ok(v.ok && v.judged);
  t.equal(v.against, 'peers');
  // error rate 1% on the peers, 20% on the canary: fails naming the numbers
  v = judgeCanary({ canary: { start: { requestsTotal: 0, errorsTotal: 0 }, now: m(500, 100) }, reference: peers(), baseline: null, limits: L });
  t.notOk(v.ok);
  t.match(v.detail, /error rate 20\.00% vs 1\.00% on the peers/);
  // within the configured increase: passes; a tighter limit fails it
  v = judgeCanary({ canary: { start: null, now: m(500, 20) }, reference: peers(), baseline: null, limits: L });
  t.ok(v.ok, '4% vs 1% is within +5 points');
  t.notOk(judgeCanary({ canary: { start: null, now: m(500, 20) }, reference: peers(), baseline: null, limits: { ...L, maxErrorRateIncrease: 0.01 } }).ok);
  // latency: 10x the peers' median and above the floor fails; 10x but under the floor does not
  t.notOk(judgeCanary({ canary: { start: null, now: m(500, 5, 200) }, reference: peers(3, 1000, 10, 20), baseline: null, limits: L }).ok);
  t.ok(
    judgeCanary({ canary: { start: null, now: m(500, 5, 20) }, reference: peers(3, 1000, 10, 2), baseline: null, limits: L }).ok,
    'under minLatencyMs is noise',
  );
  t.ok(
    judgeCanary({ canary: { start: null, now: m(500, 5, 200) }, reference: peers(3, 1000, 10, 20), baseline: null, limits: { ...L, maxLatencyFactor: 20 } }).ok,
  );
});

t.test('judgeCanary: restarts, too little traffic, baseline fallback', async (t) => {
  // the canary restarted during the upgrade: counters below the soak start count from zero
  const v = judgeCanary({ canary: { start: { requestsTotal: 5000, errorsTotal: 5 }, now: m(400, 200) }, reference: peers(), baseline: null, limits: L });
  t.notOk(v.ok, 'the 50% error rate since the restart is seen');
  // fewer than minRequests: not judged, passes
  const few = judgeCanary({ canary: { start: null, now: m(20, 20) }, reference: peers(), baseline: null, limits: L });
  t.ok(few.ok);
  t.notOk(few.judged);
  // no metrics from the canary at all: not judged
  t.notOk(judgeCanary({ canary: { start: null, now: undefined }, reference: peers(), baseline: null, limits: L }).judged);
  // no peer traffic: its own pre-upgrade baseline is the yardstick
  const b = judgeCanary({ canary: { start: null, now: m(500, 100) }, reference: peers(2, 10, 0), baseline: { errorRate: 0.01, latencyMs: 2 }, limits: L });
  t.equal(b.against, 'baseline');
  t.notOk(b.ok);
  // nothing to compare with: not judged rather than a guess
  const none = judgeCanary({ canary: { start: null, now: m(500, 100) }, reference: [], baseline: null, limits: L });
  t.ok(none.ok);
  t.equal(none.against, 'nothing');
});

t.test('sequencer: a canary whose error rate regresses during the soak is rolled back with E_CANARY_FAILED', async (t) => {
  const soak = (canaryNow: NodeMetrics, limits?: Partial<CanaryLimits>, requireJudgedSoak = false) => {
    const w = new World(
      rolloutOf(
        ['v0', 'v1', 'v2', 'v3'],
        { strategy: 'canary' },
        { canary: 'v1', soakMs: 500, requireJudgedSoak, ...(limits ? { canaryLimits: { ...L, ...limits } } : {}) },
      ),
      stepsOf(['v0', 'v1', 'v2', 'v3']),
      fleetOf(4, 0),
    );
    for (const n of w.fleet.nodes.values()) w.fleet.nodes.set(n.id, { ...n, metrics: m(1000, 10) });
    w.tick();
    t.same(
      w.sent.splice(0).map((s) => s.nodeId),
      ['v1'],
    );
    t.same(w.rollout.data.canaryBaseline, { errorRate: 0.01, latencyMs: 2 }, 'the baseline is taken at dispatch');
    w.finish('v1');
    w.fleet.nodes.set('v1', { ...w.fleet.nodes.get('v1')!, metrics: m(0, 0) }); // restarted on the new version
    w.tick();
    w.tick();
    t.equal(w.rollout.state, 'soaking');
    t.same(Object.keys(w.rollout.data.soakMetrics ?? {}).sort(), ['v0', 'v1', 'v2', 'v3']);
    // traffic during the soak: the peers +1000 requests at 1% errors
    for (const id of ['v0', 'v2', 'v3']) w.fleet.nodes.set(id, { ...w.fleet.nodes.get(id)!, metrics: m(2000, 20) });
    w.fleet.nodes.set('v1', { ...w.fleet.nodes.get('v1')!, metrics: canaryNow });
    w.advance(600);
    w.tick();
    return w;
  };
  const bad = soak(m(600, 120));
  t.equal(bad.rollout.state, 'rolling_back');
  t.equal(bad.rollout.code, 'E_CANARY_FAILED');
  t.match(bad.rollout.reason, /error rate 20\.00% vs 1\.00%/);
  bad.tick();
  t.same(
    bad.sent.splice(0).map((s) => [s.nodeId, s.command]),
    [['v1', 'rollback']],
    'only the canary is rolled back',
  );
  t.same(
    bad.steps.filter((s) => s.state !== 'pending' && s.nodeId !== 'v1'),
    [],
    'nobody else touched',
  );

  const good = soak(m(600, 6));
  t.equal(good.rollout.state, 'running', 'same error rate as the peers: the soak passes');
  t.ok(good.events.some((e) => e.type === 'canary.passed'));

  const loose = soak(m(600, 120), { maxErrorRateIncrease: 0.5 });
  t.equal(loose.rollout.state, 'running', 'the limits are configurable per rollout');

  // 10 requests on the canary during the soak, 50 needed: the metrics judge nothing.
  const quiet = soak(m(10, 0));
  t.equal(quiet.rollout.state, 'running', 'an unjudged soak passes by default');
  t.match(quiet.events.find((e) => e.type === 'canary.passed')?.data, { judged: false, metrics: { detail: /only 10 requests/ } }, 'and says it judged nothing');
  const strict = soak(m(10, 0), undefined, true);
  t.equal(strict.rollout.state, 'rolling_back', 'a rollout that requires a judged soak does not pass it');
  t.equal(strict.rollout.code, 'E_CANARY_UNJUDGED');
  t.notOk(strict.events.some((e) => e.type === 'canary.passed'));
  const judged = soak(m(600, 6), undefined, true);
  t.equal(judged.rollout.state, 'running', 'a judged soak passes either way');
});
