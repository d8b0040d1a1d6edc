/**
 * Finding: nothing limited agent messages (10,000 in 4.2 s accepted from one
 * agent). Now each agent has a token bucket (limits.agentMessages): one that
 * floods is cut off (refused E_RATE_LIMITED, close 4029, counted, one audit
 * row per interval) while the other agents' heartbeats go on being accepted.
 * A real coordinator, real ws clients.
 */
import t from 'tap';
import WebSocket from 'ws';
import { agentMessage, encode, type NodeStatus } from '@guts-upgrade/protocol';
import { waitFor } from '@guts-upgrade/simulator';
import { api, type EventsBody, type FleetBody, type NodeRegisteredBody } from '../src/client.js';
import { RATE_LIMITED_CLOSE } from '../src/engine/agent-hub.js';
import { FakeAgent, type Shared } from './fake-agent.js';
import { liveCoordinator } from './live.js';

const OP = 'operator-token-0123456789';
const FLOOD = 1000;

const status: NodeStatus = {
  nodeVersion: '1.0.0',
  health: 'up',
  ready: true,
  isLeader: false,
  currentLeader: 'v0',
  finalizedHeight: 10,
  view: 10,
  peerCount: 3,
  busy: null,
};

/** An authenticated agent that says hello and then sends `count` heartbeats at once. */
function flood(url: string, id: string, token: string, count: number): Promise<{ refused: string | null; close: number; reason: string }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${url}/agent`, { headers: { authorization: `Bearer ${token}`, 'x-guts-node-id': id } });
    let refused: string | null = null;
    ws.on('open', () => {
      ws.send(encode(agentMessage('hello', { nodeId: id, agentVersion: 'flood', status, recentResults: [] })));
      for (let seq = 0; seq < count; seq++) ws.send(encode(agentMessage('heartbeat', { nodeId: id, seq, status })));
    });
    ws.on('message', (raw: Buffer) => {
      const m = JSON.parse(raw.toString()) as { type: string; code?: string };
      if (m.type === 'refused') refused = m.code ?? null;
    });
    ws.on('close', (close, reason) => resolve({ refused, close, reason: reason.toString() }));
    ws.on('error', () => undefined);
  });
}

t.test('a flooding agent is cut off; the other agent goes on being heard', async (t) => {
  const c = await liveCoordinator(t, 'agent-flood', {
    operators: [{ name: 'alice', token: OP, role: 'operator' }],
    heartbeat: { intervalMs: 100, timeoutMs: 1000 },
  });
  const op = { url: c.url!, token: OP };
  const tokens: Record<string, string> = {};
  for (const id of ['v0', 'v1']) tokens[id] = (await api<NodeRegisteredBody>(op, 'POST', '/api/v1/nodes', { id })).token;
  const wsUrl = c.url!.replace('http', 'ws');
  const shared: Shared = { down: new Set(), maxDown: 0, height: 10, leader: 'v0' };
  // Heartbeats every 100 ms: 10 a second, well inside the default 50/s.
  const good = new FakeAgent(wsUrl, 'v0', tokens.v0!, shared);
  t.teardown(() => good.close());
  await good.connect();
  t.ok(good.welcomed, 'v0 connected');

  const first = await flood(wsUrl, 'v1', tokens.v1!, FLOOD);
  t.same(
    first,
    { refused: 'E_RATE_LIMITED', close: RATE_LIMITED_CLOSE, reason: 'E_RATE_LIMITED' },
    'the flooder is refused with E_RATE_LIMITED and closed with 4029',
  );
  // It comes straight back and floods again: cut off again, but the audit log is not flooded in turn.
  const second = await flood(wsUrl, 'v1', tokens.v1!, FLOOD);
  t.equal(second.refused, 'E_RATE_LIMITED', 'cut off again on its next connection');

  const events = async (type: string, nodeId: string) =>
    (await api<EventsBody>(op, 'GET', '/api/v1/events?after=0')).events.filter((e) => e.type === type && e.nodeId === nodeId);
  // Any transaction commits the writes queued before it (write-queue.ts): registering a node makes
  // every audit row of both cut-offs visible.
  await api<NodeRegisteredBody>(op, 'POST', '/api/v1/nodes', { id: 'v2' });
  const limited = await events('agent.rate_limited', 'v1');
  t.equal(limited.length, 1, 'one audit row for two cut-offs');
  t.match(limited[0]?.data, { code: 'E_RATE_LIMITED', perSecond: 50, burst: 200 }, 'naming the limit');

  const metrics = await api<string>({ url: c.url! }, 'GET', '/metrics');
  t.match(metrics, /^guts_upgrade_agent_rate_limited_total\{node="v1"\} 2$/m, 'both cut-offs counted');
  t.notMatch(metrics, /guts_upgrade_agent_rate_limited_total\{node="v0"\}/, 'the good agent never counted');

  // The good agent's heartbeats keep arriving: its last-seen time moves on, three times over.
  const seen = async () => (await api<FleetBody>(op, 'GET', '/api/v1/fleet')).nodes.find((n) => n.id === 'v0');
  let last = (await seen())?.lastSeenAt ?? '';
  for (let i = 0; i < 3; i++) {
    const next = await waitFor(
      async () => {
        const n = await seen();
        return n?.lastSeenAt && n.lastSeenAt > last ? n : null;
      },
      { what: 'a newer heartbeat from v0', timeoutMs: 10_000, intervalMs: 50 },
    );
    t.ok(next.connected, `v0 still connected, heard at ${next.lastSeenAt}`);
    last = next.lastSeenAt!;
  }
  t.ok(good.welcomed && good.refused === null, 'v0 was never refused');
});
