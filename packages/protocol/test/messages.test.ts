import t from 'tap';
import {
  PROTOCOL_VERSION,
  agentMessage,
  checkProtocolVersion,
  classifyDelivery,
  commandDigest,
  coordinatorMessage,
  decodeAgentMessage,
  decodeCoordinatorMessage,
  encode,
} from '../src/codec.js';
import type { Command, NodeStatus } from '../src/messages.js';

const status: NodeStatus = {
  nodeVersion: '1.0.0',
  health: 'up',
  ready: true,
  isLeader: false,
  currentLeader: 'v1',
  finalizedHeight: 42,
  view: 7,
  peerCount: 3,
  busy: null,
};
const sha = 'a'.repeat(64);
const now = '2026-11-26T12:00:00.000Z';

const upgrade = (): Command =>
  coordinatorMessage('command', {
    id: 'cmd-1',
    kind: 'upgrade',
    rolloutId: 'r1',
    issuedAt: now,
    target: { version: '1.1.0', url: 'http://127.0.0.1:8000/guts-node-1.1.0', sha256: sha },
    options: { referenceHeight: 40, syncDistance: 5 },
  }) as Command;

t.test('well-formed messages of every type round-trip', async (t) => {
  const agentSide = [
    agentMessage('hello', { nodeId: 'v0', agentVersion: '0.1.0', status, recentResults: [] }),
    agentMessage('heartbeat', { nodeId: 'v0', seq: 3, status }),
    agentMessage('ack', { commandId: 'cmd-1', status: 'accepted' }),
    agentMessage('progress', { commandId: 'cmd-1', step: 'backup', state: 'running', percent: 40, at: now }),
    agentMessage('result', {
      commandId: 'cmd-1',
      kind: 'upgrade',
      outcome: 'rolled_back',
      fromVersion: '1.0.0',
      toVersion: '1.1.0',
      runningVersion: '1.0.0',
      code: 'E_HEALTH_TIMEOUT',
      rollback: { mode: 'binary+data', ok: true },
      evidence: { checks: [{ name: 'ready', ok: false, detail: '503 for 30s' }], journalTail: ['x'] },
      startedAt: now,
      finishedAt: now,
    }),
  ];
  for (const m of agentSide) {
    const d = decodeAgentMessage(encode(m));
    t.ok(d.ok, `${m.type} decodes`);
    if (d.ok) t.same(d.message, m);
  }
  const coordSide = [
    coordinatorMessage('welcome', { heartbeatIntervalMs: 1000 }),
    coordinatorMessage('refused', { code: 'E_AUTH', message: 'unknown node' }),
    upgrade(),
    coordinatorMessage('command', { id: 'cmd-2', kind: 'rollback', issuedAt: now }),
  ];
  for (const m of coordSide) {
    const d = decodeCoordinatorMessage(Buffer.from(encode(m)));
    t.ok(d.ok, `${m.type} decodes`);
  }
});

t.test('each kind of malformed message is refused with a specific error', async (t) => {
  const good = agentMessage('heartbeat', { nodeId: 'v0', seq: 3, status });
  const cases: Array<[string, unknown, RegExp, string?]> = [
    ['not JSON', '{"type":', /not JSON/],
    ['not an object', '[1,2]', /JSON object/],
    ['a bare string', '"hello"', /JSON object/],
    ['missing proto', JSON.stringify({ ...good, proto: undefined }), /proto/],
    ['proto not MAJOR.MINOR', JSON.stringify({ ...good, proto: 'one' }), /proto/],
    ['unknown type', JSON.stringify({ ...good, type: 'gossip' }), /unknown message type "gossip"/],
    ['missing field', JSON.stringify({ ...good, nodeId: undefined }), /nodeId/],
    ['wrong field type', JSON.stringify({ ...good, seq: 'three' }), /seq/],
    ['negative count', JSON.stringify({ ...good, seq: -1 }), /seq/],
    ['nested wrong type', JSON.stringify({ ...good, status: { ...status, finalizedHeight: 1.5 } }), /status\.finalizedHeight/],
    ['bad enum', JSON.stringify({ ...good, status: { ...status, health: 'great' } }), /status\.health/],
    ['bad node id', JSON.stringify({ ...good, nodeId: '../etc' }), /nodeId/],
    ['oversized frame', JSON.stringify({ ...good, pad: 'x'.repeat(1024 * 1024) }), /exceeds/],
  ];
  for (const [name, raw, pattern] of cases) {
    const d = decodeAgentMessage(raw);
    t.equal(d.ok, false, name);
    if (!d.ok) {
      t.match(d.error, pattern, `${name}: ${d.error}`);
      t.equal(d.code, 'E_BAD_MESSAGE', `${name} code`);
    }
  }
});

t.test('malformed commands name the field', async (t) => {
  const base = upgrade() as Record<string, unknown>;
  const target = base.target as Record<string, unknown>;
  const cases: Array<[string, unknown, RegExp]> = [
    ['unknown kind', { ...base, kind: 'exec' }, /unknown command kind "exec"/],
    ['checksum not hex', { ...base, target: { ...target, sha256: 'xyz' } }, /target\.sha256/],
    ['checksum uppercase', { ...base, target: { ...target, sha256: 'A'.repeat(64) } }, /target\.sha256/],
    ['url not http', { ...base, target: { ...target, url: 'file:///etc/passwd' } }, /target\.url/],
    ['version not semver', { ...base, target: { ...target, version: 'latest' } }, /target\.version/],
    ['missing target', { ...base, target: undefined }, /target/],
    ['bad id', { ...base, id: '' }, /id/],
    ['bad signature', { ...base, target: { ...target, signature: 'short' } }, /target\.signature/],
    ['bad option type', { ...base, options: { allowDowngrade: 'yes' } }, /options\.allowDowngrade/],
    ['length zero', { ...base, target: { ...target, length: 0 } }, /target\.length/],
    ['length not an integer', { ...base, target: { ...target, length: 1.5 } }, /target\.length/],
    ['length a string', { ...base, target: { ...target, length: '395' } }, /target\.length/],
  ];
  for (const [name, value, pattern] of cases) {
    const d = decodeCoordinatorMessage(JSON.stringify(value));
    t.equal(d.ok, false, name);
    if (!d.ok) t.match(d.error, pattern, `${name}: ${d.error}`);
  }
});

t.test("an artifact's length is optional (protocol 1.4): commands with and without it decode", async (t) => {
  const base = upgrade() as Record<string, unknown>;
  const withLength = { ...base, target: { ...(base.target as object), length: 395 } };
  const d = decodeCoordinatorMessage(JSON.stringify(withLength));
  t.ok(d.ok, 'a command carrying the length');
  if (d.ok && d.message.type === 'command' && d.message.kind === 'upgrade') t.equal(d.message.target.length, 395);
  t.ok(decodeCoordinatorMessage(JSON.stringify({ ...base, proto: '1.3' })).ok, 'a 1.3 coordinator without it');
  t.not(commandDigest(withLength as Command), commandDigest(base as Command), 'the length is part of what a command asks for');
});

t.test('protocol versions: another major is refused, a newer minor accepted', async (t) => {
  t.same(checkProtocolVersion(PROTOCOL_VERSION), { ok: true });
  t.same(checkProtocolVersion('1.7'), { ok: true });
  t.match(checkProtocolVersion('2.0'), { ok: false, code: 'E_PROTOCOL_VERSION', error: /incompatible/ });
  t.match(checkProtocolVersion('0.9'), { ok: false, code: 'E_PROTOCOL_VERSION' });
  const newerMinor = { ...agentMessage('ack', { commandId: 'c', status: 'accepted' }), proto: '1.4', addedInMinor4: true };
  t.ok(decodeAgentMessage(JSON.stringify(newerMinor)).ok, 'a newer minor with extra fields decodes');
  const otherMajor = { ...agentMessage('ack', { commandId: 'c', status: 'accepted' }), proto: '2.0' };
  t.match(decodeAgentMessage(JSON.stringify(otherMajor)), { ok: false, code: 'E_PROTOCOL_VERSION' });
});

t.test('the same command id twice is recognisable as a duplicate', async (t) => {
  const a = upgrade();
  const stored = commandDigest(a);
  const redelivered = { ...a, issuedAt: '2026-11-26T12:05:00.000Z' } as Command;
  t.equal(classifyDelivery(a, undefined), 'new');
  t.equal(classifyDelivery(redelivered, stored), 'duplicate', 'a resend with a new timestamp is the same command');
  const changed = { ...a, target: { ...(a as { target: object }).target, version: '1.2.0' } } as Command;
  t.equal(classifyDelivery(changed, stored), 'conflict', 'same id, other content');
  const reverseKeys = (v: unknown): unknown =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(
          Object.entries(v)
            .reverse()
            .map(([k, x]) => [k, reverseKeys(x)]),
        )
      : v;
  const reordered = reverseKeys(a) as Command;
  t.not(JSON.stringify(reordered), JSON.stringify(a), 'the serialisations differ');
  t.equal(commandDigest(reordered), stored, 'key order does not matter');
});
