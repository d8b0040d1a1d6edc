/**
 * The per-node downtime histogram writes what prom-client's Histogram writes
 * for the same observations (names, labels, order, values), so dashboards and
 * alert rules read it unchanged.
 */
import t from 'tap';
import { Histogram, Registry } from 'prom-client';
import { DOWNTIME_BUCKETS } from '../src/metrics.js';
import { PerNodeHistogram } from '../src/per-node-histogram.js';
import { rng } from './helpers.js';

async function both(observations: Array<[string, number]>): Promise<{ ours: string; theirs: string }> {
  const name = 'guts_upgrade_node_downtime_seconds';
  const help = 'Stop-to-ready time of a node in a command, as its agent measured it';
  const ours = new PerNodeHistogram(name, help, 'node', DOWNTIME_BUCKETS);
  const b = new Registry();
  const theirs = new Histogram({ name, help, labelNames: ['node'], buckets: DOWNTIME_BUCKETS, registers: [b] });
  for (const [i, [node, v]] of observations.entries()) {
    ours.observe(node, v);
    theirs.observe({ node }, v);
    // Written out half way, so the lines kept per node must be dropped by the observations after.
    if (i === Math.floor(observations.length / 2)) ours.text();
  }
  // A registry holding one metric writes its block and a newline.
  return { ours: `${ours.text()}\n`, theirs: await b.metrics() };
}

t.test('the same exposition as prom-client’s Histogram', async (t) => {
  const none = await both([]);
  t.equal(none.ours, none.theirs, 'no observation yet');

  // Every bound exactly (a value equal to a bound is in that bucket), beyond the last, zero, and fractions.
  const edges: Array<[string, number]> = [
    ...DOWNTIME_BUCKETS.map((b): [string, number] => ['v0', b]),
    ['v0', 0],
    ['v1', 1801],
    ['v1', 0.25],
    ['v2', 59.999],
    ['a "quoted" \\ node\nid', 3],
  ];
  const e = await both(edges);
  t.equal(e.ours, e.theirs, 'bounds, zero, past the last bound, a label value to escape');
  t.match(e.ours, /^guts_upgrade_node_downtime_seconds_bucket\{le="\+Inf",node="v1"\} 2$/m, 'the +Inf bucket counts the value past 1800');

  for (const seed of [1, 2, 3]) {
    const r = rng(seed);
    const obs: Array<[string, number]> = Array.from({ length: 400 }, () => [`sim-${Math.floor(r() * 40)}`, Math.round(r() * r() * 2400 * 1000) / 1000]);
    const x = await both(obs);
    t.equal(x.ours, x.theirs, `seed ${seed}: 400 observations over 40 nodes`);
  }
});

t.test('a value that is not a number is not counted; bad bounds are refused', async (t) => {
  const h = new PerNodeHistogram('x_seconds', 'x', 'node', [1, 2]);
  h.observe('a', Number.NaN);
  t.equal(h.text(), '# HELP x_seconds x\n# TYPE x_seconds histogram', 'NaN not counted');
  h.observe('a', 1.5);
  t.equal(h.text().split('\n').length, 7, 'HELP, TYPE, two buckets, +Inf, sum, count');
  t.throws(() => new PerNodeHistogram('y', 'y', 'node', [2, 1]), /increasing/);
});
