import t from 'tap';
import { boundNodeLog, failedCheckOf, failureEvidence, NODE_LOG_BYTES, NODE_LOG_LINE_CHARS, NODE_LOG_LINES } from '../src/evidence.js';
import { decodeAgentMessage } from '../src/codec.js';

const bytes = (lines: string[]) => lines.reduce((n, l) => n + Buffer.byteLength(l, 'utf8') + 1, 0);

t.test('a node log keeps the newest lines, within the line and byte bounds', async (t) => {
  const many = Array.from({ length: 500 }, (_, i) => `line ${i}`);
  const kept = boundNodeLog(many);
  t.equal(kept.length, NODE_LOG_LINES);
  t.same(kept.slice(-2), ['line 498', 'line 499'], 'the newest, oldest first');

  const long = boundNodeLog(['x'.repeat(10_000)]);
  t.equal(long[0]!.length, NODE_LOG_LINE_CHARS, 'a long line is cut to the line bound');
  t.match(long[0], /…\[cut\]$/, 'and says so');

  // 50 lines of 1 KiB would be 50 KiB: the byte bound drops the oldest.
  const wide = boundNodeLog(Array.from({ length: 50 }, (_, i) => `${i}`.padEnd(1000, 'é')));
  t.ok(bytes(wide) <= NODE_LOG_BYTES, `within ${NODE_LOG_BYTES} bytes (${bytes(wide)})`);
  t.ok(wide.length < 50 && wide.at(-1)!.startsWith('49'), `the newest kept (${wide.length} lines)`);

  t.same(boundNodeLog([]), []);
});

t.test('the failing check is the last one that did not pass', async (t) => {
  t.equal(failedCheckOf([{ name: 'ready', ok: true }]), null);
  t.same(
    failedCheckOf([
      { name: 'ready', ok: false, detail: 'first' },
      { name: 'version', ok: true },
      { name: 'peers', ok: false, detail: 'second' },
    ])?.detail,
    'second',
  );
});

t.test('failure evidence: only for failures, bounded again on the coordinator side', async (t) => {
  const checks = [{ name: 'consensus', ok: false, detail: 'still Starting after 120000 ms', last: 'Starting', waitedMs: 120000 }];
  t.equal(failureEvidence({ outcome: 'succeeded', evidence: { checks, nodeLog: ['x'] } }), null, 'a success carries none');
  t.equal(failureEvidence({ outcome: 'failed' }), null, 'an old agent sent none');
  t.equal(failureEvidence({ outcome: 'failed', evidence: { checks: [] } }), null, 'nothing to show');
  t.same(failureEvidence({ outcome: 'rolled_back', evidence: { checks, nodeLog: ['boom'] } }), {
    check: { name: 'consensus', detail: 'still Starting after 120000 ms', last: 'Starting', waitedMs: 120000 },
    nodeLog: ['boom'],
  });
  // A lying agent's oversized log (the schema would refuse it on the wire; a stored one is cut again).
  const huge = failureEvidence({ outcome: 'failed', evidence: { checks: [], nodeLog: Array.from({ length: 1000 }, () => 'y'.repeat(5000)) } });
  t.ok(huge && huge.nodeLog.length <= NODE_LOG_LINES && bytes(huge.nodeLog) <= NODE_LOG_BYTES, 'bounded');
});

t.test('the wire schema refuses a node log over the bounds', async (t) => {
  const result = (nodeLog: string[]) => ({
    proto: '1.3',
    type: 'result',
    commandId: 'c1',
    kind: 'upgrade',
    outcome: 'failed',
    fromVersion: '1.0.0',
    toVersion: '1.1.0',
    runningVersion: '1.0.0',
    evidence: { checks: [], nodeLog },
    startedAt: '2026-12-05T00:00:00.000Z',
    finishedAt: '2026-12-05T00:00:01.000Z',
  });
  t.equal(decodeAgentMessage(result(['ok'])).ok, true);
  t.equal(decodeAgentMessage(result(Array.from({ length: NODE_LOG_LINES + 1 }, () => 'a'))).ok, false, 'too many lines');
  t.equal(decodeAgentMessage(result(['z'.repeat(NODE_LOG_LINE_CHARS + 1)])).ok, false, 'a line too long');
});
