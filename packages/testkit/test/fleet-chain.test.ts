/**
 * The fleet's chain options: weights, unmanaged validators stopped and
 * started, an epoch change on every node, and the lying agent (a test double)
 * whose real agent reports the proxy's lies. Agents talk to a stand-in
 * coordinator that only welcomes them and keeps what they send.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { WebSocketServer } from 'ws';
import { coordinatorMessage, decodeAgentMessage, encode, type AgentMessage } from '@guts-upgrade/protocol';
import { clusterHeights, consensusValidators, getJson, waitFor } from '@guts-upgrade/simulator';
import { LIE_HEIGHT, LIE_VIEW, startSimFleet } from '../src/index.js';

t.test('weights, unmanaged validators, an epoch change and a lying agent', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fleet-chain-'));
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', path: '/agent' });
  await new Promise((r) => wss.once('listening', r));
  const got: AgentMessage[] = [];
  wss.on('connection', (ws) => {
    ws.on('message', (raw) => {
      const d = decodeAgentMessage(raw as Buffer);
      if (!d.ok) throw new Error(`agent sent an invalid message: ${d.error}`);
      got.push(d.message);
      if (d.message.type === 'hello') ws.send(encode(coordinatorMessage('welcome', { heartbeatIntervalMs: 300 })));
    });
  });
  const fleet = await startSimFleet({
    n: 2,
    unmanaged: 3,
    weights: [2, 1, 1, 1, 1],
    liar: 'v1',
    dir,
    coordinatorWsUrl: `ws://127.0.0.1:${(wss.address() as { port: number }).port}`,
    tokens: { v0: 'agent-token-v0-0123456789', v1: 'agent-token-v1-0123456789' },
  });
  t.teardown(async () => {
    await fleet.close();
    await new Promise((r) => wss.close(r));
    rmSync(dir, { recursive: true, force: true });
  });
  t.same(
    fleet.nodes.map((n) => [n.id, n.managed, n.weight]),
    [
      ['v0', true, 2],
      ['v1', true, 1],
    ],
  );
  t.same(
    fleet.unmanaged.map((n) => [n.id, n.managed, n.weight, n.agent]),
    [
      ['v2', false, 1, null],
      ['v3', false, 1, null],
      ['v4', false, 1, null],
    ],
  );
  t.equal(fleet.liar?.node.id, 'v1');
  const all = [...fleet.nodes, ...fleet.unmanaged];
  t.match(await consensusValidators(fleet.unmanaged[0]!), { epoch: 0, total_weight: 6, quorum_weight: 4, validator_count: 5 });

  // Hello names each managed validator; heartbeats carry the chain.
  const v0 = fleet.nodes[0]!;
  const hello = await waitFor(() => got.find((m) => m.type === 'hello' && m.nodeId === 'v0'), { what: 'hello from v0', timeoutMs: 30_000 });
  t.equal(hello.type === 'hello' && hello.validatorPubkey, v0.pubkey, 'validatorPubkey from agent.yaml');
  const hb = await waitFor(() => got.find((m) => m.type === 'heartbeat' && m.nodeId === 'v0' && (m.status.chain?.blocks.length ?? 0) > 0), {
    what: 'v0 heartbeat with blocks',
    timeoutMs: 30_000,
  });
  t.same(hb.type === 'heartbeat' && hb.status.chain?.validators?.validators.map((v) => v.weight), [2, 1, 1, 1, 1]);

  // The liar's agent reports the proxy's lies; its node itself tells the truth.
  const lie = await waitFor(() => got.find((m) => m.type === 'heartbeat' && m.nodeId === 'v1' && (m.status.finalizedHeight ?? 0) > 0), {
    what: 'liar heartbeat',
    timeoutMs: 30_000,
  });
  const st = lie.type === 'heartbeat' ? lie.status : null;
  t.ok(st!.finalizedHeight! >= LIE_HEIGHT, `finalized height ${st!.finalizedHeight}`);
  t.ok(st!.view! >= LIE_VIEW, `view ${st!.view}`);
  t.equal(st!.isLeader, true);
  t.equal(st!.currentLeader, fleet.liar!.node.pubkey);
  const truth = (await getJson<{ finalized_height: number }>(`${fleet.liar!.node.apiUrl}/api/consensus/status`))!.body;
  t.ok(truth.finalized_height < 1e6, 'the node behind the proxy tells the truth');

  // Three unmanaged validators stopped: 2 + 1 = 3 < 4, the chain stalls; started again, it resumes.
  await Promise.all(fleet.unmanaged.map((n) => fleet.stopNode(n)));
  t.same(await clusterHeights(fleet.unmanaged), [null, null, null], 'stopped');
  await new Promise((r) => setTimeout(r, 1000));
  const a = await clusterHeights(fleet.nodes);
  await new Promise((r) => setTimeout(r, 3000));
  t.same(await clusterHeights(fleet.nodes), a, 'weight 3 of 6 up: no finalization');
  await Promise.all(fleet.unmanaged.map((n) => fleet.startNode(n)));
  await waitFor(async () => Math.min(...(await clusterHeights(all)).map((h) => h ?? -1)) > Math.max(...a.map((h) => h ?? 0)) + 2, {
    what: 'chain resumes',
    timeoutMs: 60_000,
  });
  t.pass('resumed after the unmanaged validators came back');

  // An epoch change on every node: v0's weight drops to 1.
  const r = await fleet.setEpoch(1, [1, 1, 1, 1, 1]);
  t.same(r, { set: ['v0', 'v1', 'v2', 'v3', 'v4'], unreachable: [] });
  // Read with retries: one read on a loaded machine may time out (null), which says nothing of the epoch.
  for (const n of all) {
    const vr = await waitFor(() => consensusValidators(n), { what: `${n.id} validators`, timeoutMs: 30_000 });
    t.match(vr, { epoch: 1, total_weight: 5, quorum_weight: 4 }, `${n.id} in epoch 1`);
  }
  await t.rejects(fleet.setEpoch(1, [2, 1, 1, 1, 1]), /refused epoch 1/, 'a conflicting epoch is refused');
  await waitFor(() => got.some((m) => m.type === 'heartbeat' && m.nodeId === 'v0' && m.status.chain?.validators?.epoch === 1), {
    what: 'v0 reports epoch 1',
    timeoutMs: 30_000,
  });
  t.pass('the agent reports the new epoch');
});
