import t from 'tap';
import { WebSocketServer, type WebSocket } from 'ws';
import { coordinatorMessage, decodeAgentMessage, encode, type AgentMessage, type Command } from '@guts-upgrade/protocol';
import { Agent } from '../src/agent.js';
import { loadConfig } from '../src/config.js';
import { Connection } from '../src/connection.js';
import { createLogger } from '../src/log.js';
import { waitFor } from '@guts-upgrade/simulator';
import { makeRig } from './helpers.js';

// The agent runs in this process here and spawns the node: keep tap's loader out of it.
delete process.env.NODE_OPTIONS;

t.test('hello/welcome, command ack/progress/result, duplicate, conflict, result after a partition', async (t) => {
  const rig = await makeRig(t);
  await rig.startNode();
  let partitioned = false;
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', path: '/agent', verifyClient: () => !partitioned });
  await new Promise((r) => wss.once('listening', r));
  const port = (wss.address() as { port: number }).port;
  const got: AgentMessage[] = [];
  const headers: Record<string, string | string[] | undefined>[] = [];
  let sock: WebSocket | null = null;
  wss.on('connection', (ws, req) => {
    headers.push(req.headers);
    sock = ws;
    ws.on('message', (raw) => {
      const d = decodeAgentMessage(raw as Buffer);
      if (!d.ok) throw new Error(`agent sent an invalid message: ${d.error}`);
      got.push(d.message);
      if (d.message.type === 'hello') ws.send(encode(coordinatorMessage('welcome', { heartbeatIntervalMs: 200 })));
    });
  });
  const config = loadConfig(rig.configPath, {});
  const agent = new Agent(config, createLogger('warn', true));
  const conn = new Connection(
    agent,
    { url: `ws://127.0.0.1:${port}`, token: 'sekret', nodeId: 'v0', role: 'follower', reconnectMaxMs: 500, reconnectBaseMs: 100 },
    agent.log,
  );
  void conn.run();
  t.teardown(async () => {
    conn.stop();
    await agent.idle();
    agent.close();
    await new Promise((r) => wss.close(r));
  });

  await waitFor(() => got.some((m) => m.type === 'heartbeat'), { what: 'heartbeat', timeoutMs: 10_000 });
  t.equal(headers[0]!.authorization, 'Bearer sekret');
  t.equal(headers[0]!['x-guts-node-id'], 'v0');
  const hello = got.find((m) => m.type === 'hello');
  t.equal(hello?.type === 'hello' && hello.status.nodeVersion, '1.0.0', 'hello carries the node status');
  t.equal(hello?.type === 'hello' && hello.role, 'follower', "and the role of the agent's config");

  const a = rig.artifact('1.0.1');
  const cmd = coordinatorMessage('command', {
    id: 'c-1',
    kind: 'upgrade',
    issuedAt: new Date().toISOString(),
    target: { version: '1.0.1', url: a.url, sha256: a.sha256 },
  }) as Command;
  sock!.send(encode(cmd));
  const result = await waitFor(() => got.find((m) => m.type === 'result' && m.commandId === 'c-1'), { what: 'result', timeoutMs: 60_000 });
  t.equal(result.type === 'result' && result.outcome, 'succeeded');
  t.ok(
    got.some((m) => m.type === 'ack' && m.commandId === 'c-1' && m.status === 'accepted'),
    'acked',
  );
  const steps = got.filter((m) => m.type === 'progress' && m.state === 'done').map((m) => m.type === 'progress' && m.step);
  t.same(steps, ['preflight', 'fetch', 'backup', 'stop', 'install', 'start', 'verify', 'commit'], 'progress per step');

  // Redelivery: duplicate ack + the stored result, nothing runs again.
  const before = got.length;
  sock!.send(encode({ ...cmd, issuedAt: new Date(Date.now() + 1000).toISOString() }));
  await waitFor(() => got.slice(before).some((m) => m.type === 'result'), { what: 'result re-sent', timeoutMs: 10_000 });
  t.ok(
    got.slice(before).some((m) => m.type === 'ack' && m.status === 'duplicate'),
    'duplicate ack',
  );
  t.notOk(
    got.slice(before).some((m) => m.type === 'progress'),
    'not run twice',
  );

  // Same id, other content: conflict.
  sock!.send(
    encode(
      coordinatorMessage('command', {
        id: 'c-1',
        kind: 'upgrade',
        issuedAt: new Date().toISOString(),
        target: { version: '1.1.0', url: a.url, sha256: a.sha256 },
      }),
    ),
  );
  await waitFor(() => got.some((m) => m.type === 'ack' && m.status === 'rejected'), { what: 'rejection', timeoutMs: 10_000 });
  t.ok(got.some((m) => m.type === 'ack' && m.status === 'rejected' && m.code === 'E_DUPLICATE_COMMAND'));

  // Invalid message: rejected with the schema error.
  sock!.send(JSON.stringify({ proto: '1.0', type: 'command', id: 'c-bad', kind: 'upgrade', issuedAt: 'x' }));
  await waitFor(() => got.some((m) => m.type === 'ack' && m.commandId === 'c-bad' && m.code === 'E_BAD_MESSAGE'), {
    what: 'bad message ack',
    timeoutMs: 10_000,
  });

  // Partition mid-command: the command finishes alone; the next hello reports it.
  const b = rig.artifact('1.1.0');
  const hellos = got.filter((m) => m.type === 'hello').length;
  sock!.send(
    encode(
      coordinatorMessage('command', {
        id: 'c-2',
        kind: 'upgrade',
        issuedAt: new Date().toISOString(),
        target: { version: '1.1.0', url: b.url, sha256: b.sha256 },
      }),
    ),
  );
  await waitFor(() => got.some((m) => m.type === 'progress' && m.commandId === 'c-2' && m.step === 'backup'), { what: 'c-2 running', timeoutMs: 30_000 });
  partitioned = true;
  sock!.terminate();
  await waitFor(
    async () => {
      await agent.idle();
      return true;
    },
    { what: 'c-2 done', timeoutMs: 60_000 },
  );
  partitioned = false;
  const later = await waitFor(
    () =>
      got
        .filter((m) => m.type === 'hello')
        .slice(hellos)
        .find((m) => m.type === 'hello' && m.recentResults.some((r) => r.commandId === 'c-2')),
    { what: 'hello with recentResults', timeoutMs: 20_000 },
  );
  const r2 = later.type === 'hello' ? later.recentResults.find((r) => r.commandId === 'c-2') : undefined;
  t.equal(r2?.outcome, 'succeeded', `outcome learned after the partition: ${r2?.code} ${r2?.message}`);
  t.equal(later.type === 'hello' && later.status.nodeVersion, '1.1.0');
});

t.test('refused: logged and backed off', async (t) => {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise((r) => wss.once('listening', r));
  let connections = 0;
  wss.on('connection', (ws) => {
    connections++;
    ws.on('message', () => ws.send(encode(coordinatorMessage('refused', { code: 'E_AUTH', message: 'unknown token' }))));
  });
  const rig = await makeRig(t);
  const agent = new Agent(loadConfig(rig.configPath, {}), createLogger('silent', true));
  const conn = new Connection(
    agent,
    { url: `ws://127.0.0.1:${(wss.address() as { port: number }).port}`, token: 'bad', nodeId: 'v0', reconnectMaxMs: 400, reconnectBaseMs: 50 },
    agent.log,
  );
  void conn.run();
  await waitFor(() => connections >= 2, { what: 'reconnect after refusal', timeoutMs: 10_000 });
  t.notOk(conn.connected);
  conn.stop();
  await new Promise((r) => setTimeout(r, 300));
  agent.close();
  await new Promise((r) => wss.close(r));
});
