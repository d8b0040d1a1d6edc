import t from 'tap';
import { TokenBucket } from '../src/engine/token-bucket.js';

t.test('a burst is allowed, then the rate, and an empty bucket refills with time', async (t) => {
  const b = new TokenBucket(10, 5, 0);
  let taken = 0;
  while (b.take(0)) taken++;
  t.equal(taken, 5, 'the burst at once');
  t.notOk(b.take(50), 'half a token is not one');
  t.ok(b.take(100), 'one token after 1/10 s');
  t.notOk(b.take(100));
  let later = 0;
  while (b.take(10_000)) later++;
  t.equal(later, 5, 'a long pause refills only up to the burst');
});

t.test('a clock that steps back refills nothing', async (t) => {
  const b = new TokenBucket(1, 1, 5000);
  t.ok(b.take(5000));
  t.notOk(b.take(1000));
  t.notOk(b.take(5500), 'time is counted from the latest instant seen');
  t.ok(b.take(6000));
});
