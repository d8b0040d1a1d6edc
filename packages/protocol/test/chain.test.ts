import t from 'tap';
import {
  type ChainValidator,
  type FinalizedBlock,
  activeWeight,
  contiguousTail,
  largestSlack,
  leaderOfView,
  livenessFromBlocks,
  quorumWeightFor,
  reachedByAtLeast,
  reportersNeeded,
  slackOf,
  weightOf,
} from '../src/chain.js';
import { rng } from './prng.js';

const vals = (weights: number[], inactive: number[] = []): ChainValidator[] =>
  weights.map((w, i) => ({ name: `v${i}`, pubkey: `pk${i}`, weight: w, active: !inactive.includes(i) }));

t.test('quorum weight is ceil(2/3 × active weight) in integers', async (t) => {
  const table: Array<[number, number]> = [
    [0, 0],
    [1, 1],
    [3, 2],
    [4, 3],
    [8, 6],
    [10, 7],
    [13, 9],
    [100, 67],
  ];
  for (const [w, q] of table) t.equal(quorumWeightFor(w), q, `quorum(${w})`);
  for (let w = 0; w <= 1000; w++) t.equal(quorumWeightFor(w), Math.ceil((2 * w) / 3), `exact for ${w}`);
  t.throws(() => quorumWeightFor(-1), RangeError);
  t.throws(() => quorumWeightFor(1.5), RangeError);
});

t.test('the issue’s sets: largest slack and who can ever go down', async (t) => {
  const heavy = vals([4, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
  t.equal(activeWeight(heavy), 13);
  t.equal(largestSlack({ validators: heavy, quorumWeight: quorumWeightFor(13) }), 4, '13 − 9');
  const tooHeavy = vals([5, 1, 1, 1]);
  t.equal(quorumWeightFor(8), 6);
  t.equal(largestSlack({ validators: tooHeavy, quorumWeight: 6 }), 2, 'the weight-5 validator can never go down');
  const ten = vals(Array(10).fill(1));
  t.equal(largestSlack({ validators: ten, quorumWeight: quorumWeightFor(10) }), 3);
});

t.test('the leader of view v is index v mod k among the active validators', async (t) => {
  const set = vals([1, 1, 1, 1, 1], [1]);
  const order = [0, 2, 3, 4];
  for (let v = 0; v < 20; v++) t.equal(leaderOfView(v, set)?.name, `v${order[v % 4]}`, `view ${v}`);
  t.equal(leaderOfView(3, vals([1], [0])), null, 'no active validator, no leader');
});

t.test('property: a down set is within the slack exactly when the live rest holds quorum', async (t) => {
  for (let seed = 1; seed <= 2000; seed++) {
    const r = rng(seed);
    const n = 1 + Math.floor(r() * 15);
    const weights = Array.from({ length: n }, () => 1 + Math.floor(r() * 10));
    const set = vals(weights);
    const quorumWeight = quorumWeightFor(activeWeight(set));
    const live = new Set(set.filter(() => r() < 0.85).map((v) => v.pubkey));
    const down = set.filter((v) => live.has(v.pubkey) && r() < 0.3).map((v) => v.pubkey);
    const slack = slackOf({ validators: set, quorumWeight }, live);
    const after = new Set([...live].filter((p) => !down.includes(p)));
    const within = weightOf(set, down) <= slack;
    const stillQuorum = weightOf(set, after) >= quorumWeight;
    if (within !== stillQuorum) t.fail(`seed ${seed}: within=${within} quorum=${stillQuorum}`);
    if (slack > largestSlack({ validators: set, quorumWeight })) t.fail(`seed ${seed}: slack above the largest slack`);
    // Any two quorums overlap in more than a third of the weight: safety holds with ceil(2/3).
    if (2 * quorumWeight - activeWeight(set) <= activeWeight(set) / 3 - 1e-9 && activeWeight(set) > 0) {
      t.fail(`seed ${seed}: quorums of ${weights} overlap too little`);
    }
  }
  t.pass('2000 random weighted sets');
});

t.test('reachedByAtLeast ignores up to k − 1 outliers', async (t) => {
  t.equal(reachedByAtLeast([], 2), null);
  t.equal(reachedByAtLeast([56, 1e12, 55, 56], 2), 56, 'one report of 10^12 moves nothing');
  t.equal(reachedByAtLeast([56, 55], 4), 55, 'fewer reports than k: the one they all reach');
  for (let seed = 1; seed <= 500; seed++) {
    const r = rng(seed);
    const honest = Array.from({ length: 4 + Math.floor(r() * 6) }, () => 100 + Math.floor(r() * 5));
    const k = reportersNeeded(vals(Array(honest.length).fill(1)));
    const liars = Array.from({ length: k - 1 }, () => Math.floor(r() * 1e12));
    const got = reachedByAtLeast([...honest, ...liars], k) as number;
    if (got > Math.max(...honest) || got < Math.min(...honest)) t.fail(`seed ${seed}: ${got} outside honest range`);
  }
  t.equal(reportersNeeded(vals(Array(10).fill(1))), 4);
  t.equal(reportersNeeded(vals([1, 1, 1, 1])), 2);
});

const block = (height: number, view: number, producer: string): FinalizedBlock => ({ height, blockId: `b${height}`, view, producer, signatureCount: 3 });

t.test('liveness: produced in its latest leader view, skipped, or no turn yet', async (t) => {
  const set = vals([1, 1, 1, 1]);
  const blocks = [block(10, 8, 'pk0'), block(11, 9, 'pk1'), block(12, 11, 'pk3')];
  const live = livenessFromBlocks(set, blocks);
  t.equal(live.get('pk0')?.live, true);
  t.equal(live.get('pk1')?.live, true);
  t.equal(live.get('pk2')?.verdict, 'skipped', 'view 10 was v2’s and has no block');
  t.match(live.get('pk2')?.evidence, /skipped its leader view 10/);
  t.equal(live.get('pk3')?.live, true);
  const short = livenessFromBlocks(set, [block(12, 11, 'pk3')]);
  t.equal(short.get('pk0')?.verdict, 'no-turn', 'a window shorter than k views proves nothing about the others');
  t.equal(livenessFromBlocks(set, []).get('pk0')?.live, false);
  const wrong = livenessFromBlocks(set, [block(1, 0, 'pk3'), block(2, 1, 'pk1')]);
  t.equal(wrong.get('pk0')?.live, false, 'a block whose producer is not the view’s leader proves nothing for the leader');
});

t.test('liveness stays decidable when every certificate carries exactly the quorum', async (t) => {
  // Signature counts never vary here, yet every validator's turn decides.
  const set = vals([1, 1, 1, 1, 1, 1, 1]);
  const blocks: FinalizedBlock[] = [];
  for (let v = 0, h = 1; v < 14; v++) if (v % 7 !== 5) blocks.push({ ...block(h++, v, `pk${v % 7}`), signatureCount: 5 });
  const live = livenessFromBlocks(set, blocks);
  t.same(
    [...live.values()].filter((l) => !l.live).map((l) => l.name),
    ['v5'],
  );
});

t.test('contiguousTail stops at the first height gap from the top', async (t) => {
  const tail = contiguousTail([block(1, 0, 'a'), block(3, 2, 'a'), block(4, 3, 'a'), block(5, 5, 'a')]);
  t.same(
    tail.map((b) => b.height),
    [3, 4, 5],
  );
  t.same(contiguousTail([]), []);
});
