import t from 'tap';
import { cronProblem, durationProblem, parseDurationMs } from '../src/schedule.js';

t.test('one duration syntax: milliseconds, or units in decreasing order', async (t) => {
  const ok: [unknown, number][] = [
    [0, 0],
    [1500, 1500],
    ['1500', 1500],
    ['1500ms', 1500],
    ['30s', 30_000],
    ['2m', 120_000],
    ['4h', 14_400_000],
    ['1d', 86_400_000],
    ['1h30m', 5_400_000],
    ['1m30s500ms', 90_500],
    [' 5s ', 5000],
  ];
  for (const [input, ms] of ok) t.equal(parseDurationMs(input), ms, JSON.stringify(input));
  for (const input of [-1, 1.5, '1.5s', 'soon', '', '30', '30 s', '30s1h', '1h1h', '5x', null, true, {}, '99999999999999999999d']) {
    if (input === '30') continue; // digits alone are milliseconds
    t.equal(parseDurationMs(input), null, `refused: ${JSON.stringify(input)}`);
  }
  t.match(durationProblem('soon'), /must be milliseconds or a duration like "30s", "2m", "4h" or "1h30m", got "soon"/);
  t.equal(durationProblem('4h'), null);
});

t.test('one cron syntax: node-cron, five fields or six with seconds', async (t) => {
  t.equal(cronProblem('0 2 * * 0'), null);
  t.equal(cronProblem('*/30 * * * * *'), null, 'with seconds');
  t.match(cronProblem('0 25 * * *'), /invalid cron expression "0 25 \* \* \*"/);
  t.match(cronProblem('every day'), /invalid cron expression/);
  t.match(cronProblem(''), /must be a cron expression/);
  t.match(cronProblem(42), /must be a cron expression/);
});
