/**
 * The agent reports the chain as its node sees it: hello names the validator
 * (validatorPubkey from the config), and every status carries the validator
 * set and the recent finalized blocks. A node without those endpoints still
 * heartbeats, with no set and no blocks.
 */
import http from 'node:http';
import t from 'tap';
import { WebSocketServer } from 'ws';
import { coordinatorMessage, decodeAgentMessage, encode, type AgentMessage } from '@guts-upgrade/protocol';
import { waitFor } from '@guts-upgrade/simulator';
import { Agent } from '../src/agent.js';
import { loadConfig, resolveConfig } from '../src/config.js';
import { Connection } from '../src/connection.js';
import { createLogger } from '../src/log.js';
import { blocksOf, CHAIN_BLOCKS, followPause, NodeClient, validatorSetOf } from '../src/node-client.js';
import { makeRig } from './helpers.js';

delete process.env.NODE_OPTIONS;

/** A coordinator stand-in that welcomes every hello and keeps what the agent sends. */
async function fakeCoordinator(t: { teardown(fn: () => unknown): void }): Promise<{ url: string; got: AgentMessage[] }> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', path: '/agent' });
  await new Promise((r) => wss.once('listening', r));
  const got: AgentMessage[] = [];
  wss.on('connection', (ws) => {
    ws.on('message', (raw) => {
      const d = decodeAgentMessage(raw as Buffer);
      if (!d.ok) throw new Error(`agent sent an invalid message: ${d.error}`);
      got.push(d.message);
      if (d.message.type === 'hello') ws.send(encode(coordinatorMessage('welcome', { heartbeatIntervalMs: 200 })));
    });
  });
  t.teardown(() => new Promise((r) => wss.close(r)));
  return { url: `ws://127.0.0.1:${(wss.address() as { port: number }).port}`, got };
}

t.test('validatorPubkey: optional, hex only, named when wrong', async (t) => {
  t.equal(resolveConfig({ nodeId: 'a' }, {}).validatorPubkey, null);
  t.equal(resolveConfig({ nodeId: 'a', validatorPubkey: 'ab12CD' }, {}).validatorPubkey, 'ab12CD');
  t.throws(() => resolveConfig({ nodeId: 'a', validatorPubkey: 'v0' }, {}), {
    code: 'E_CONFIG',
    message: /validatorPubkey: must be the validator's public key in hex/,
  });
  t.throws(() => resolveConfig({ nodeId: 'a', validatorPubkey: 12 }, {}), { message: /validatorPubkey: must be a string/ });
  t.equal(resolveConfig({ nodeId: 'a' }, { GUTS_UPGRADE_VALIDATOR_PUBKEY: 'ff00' }).validatorPubkey, 'ff00', 'from the environment');
});

t.test('the node API mapped to the protocol: malformed sets are dropped whole, blocks oldest first', async (t) => {
  const set = {
    epoch: 2,
    total_weight: 5,
    quorum_weight: 4,
    validator_count: 2,
    validators: [
      { name: 'a', pubkey: 'aa', weight: 4, addr: 'x:1', active: true },
      { name: 'b', pubkey: 'bb', weight: 1, addr: 'x:2', active: false },
    ],
  };
  t.same(validatorSetOf(set), {
    epoch: 2,
    totalWeight: 5,
    quorumWeight: 4,
    validators: [
      { name: 'a', pubkey: 'aa', weight: 4, active: true },
      { name: 'b', pubkey: 'bb', weight: 1, active: false },
    ],
  });
  t.equal(validatorSetOf({ ...set, validators: [...set.validators, { name: 'c', pubkey: 'not hex', weight: 1 }] }), null, 'one bad validator: no set');
  t.equal(validatorSetOf({ ...set, quorum_weight: -1 }), null);
  t.equal(validatorSetOf('nope'), null);
  const blocks = [
    { height: 9, block_id: 'b9', view: 30, producer: 'bb', signature_count: 2 },
    { height: 8, block_id: 'b8', view: 29, producer: 'aa' },
    { height: 7, block_id: 'b7', view: 28, producer: 'zz' },
  ];
  t.same(
    blocksOf(blocks),
    [
      { height: 8, blockId: 'b8', view: 29, producer: 'aa', signatureCount: null },
      { height: 9, blockId: 'b9', view: 30, producer: 'bb', signatureCount: 2 },
    ],
    'sorted by height, malformed left out, a missing signature count is null',
  );
  t.same(blocksOf({}), []);
});

t.test('the agent reports up to 64 contiguous blocks although the node serves its last 10', async (t) => {
  let top = 30;
  let salt = 'a';
  const block = (h: number) => ({ height: h, block_id: `${salt}${h}`, view: h, producer: 'aa', signature_count: 3 });
  const node = http.createServer((req, res) => {
    const m = /^\/api\/consensus\/blocks(?:\/(\d+))?$/.exec(req.url ?? '');
    res.writeHead(m ? 200 : 404, { 'content-type': 'application/json' });
    if (!m) return res.end('{}');
    if (m[1]) return res.end(JSON.stringify(Number(m[1]) <= top ? block(Number(m[1])) : null));
    res.end(JSON.stringify(Array.from({ length: Math.min(10, top) }, (_, i) => block(top - Math.min(10, top) + 1 + i))));
  });
  await new Promise<void>((r) => node.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise((r) => node.close(r)));
  const client = new NodeClient(`http://127.0.0.1:${(node.address() as { port: number }).port}`, null, 2000);
  const heights = async () => (await client.chain()).blocks.map((b) => b.height);
  const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
  t.same(await heights(), range(1, 30), 'a gap below the last ten is filled from /blocks/{height}');
  top = 100;
  t.same(await heights(), range(37, 100), 'at most 64, the newest');
  top = 50;
  salt = 'b';
  t.same(await heights(), range(1, 50), 'a chain that went back (a restore) starts over');
  t.same((await client.chain()).blocks[0]?.blockId, 'b1');
});

t.test('following the chain between heartbeats: the run stays whole without reading blocks one by one', async (t) => {
  // A node (a stand-in for guts-node's two block endpoints) finalizing 10 blocks a second, serving its last ten.
  const t0 = Date.now();
  const top = () => 30 + Math.floor((Date.now() - t0) / 100);
  let byHeight = 0;
  const block = (h: number) => ({ height: h, block_id: `b${h}`, view: h, producer: 'aa', signature_count: 3 });
  const node = http.createServer((req, res) => {
    const m = /^\/api\/consensus\/blocks(?:\/(\d+))?$/.exec(req.url ?? '');
    res.writeHead(m ? 200 : 404, { 'content-type': 'application/json' });
    if (!m) return res.end('{}');
    const h = top();
    if (m[1]) {
      byHeight++;
      return res.end(JSON.stringify(Number(m[1]) <= h ? block(Number(m[1])) : null));
    }
    res.end(JSON.stringify(Array.from({ length: 10 }, (_, i) => block(h - 9 + i))));
  });
  await new Promise<void>((r) => node.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise((r) => node.close(r)));
  const url = `http://127.0.0.1:${(node.address() as { port: number }).port}`;
  const contiguous = (hs: number[]) => hs.every((h, i) => i === 0 || h === hs[i - 1]! + 1);

  // Heartbeats every 2 s read 20 new blocks each: without following, 10 of them one by one per beat.
  const beats = async (client: NodeClient) => {
    await client.chain();
    await new Promise((r) => setTimeout(r, 400));
    await client.chain(); // two reads: the client has measured the block rate
    byHeight = 0;
    let last: number[] = [];
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 2000));
      last = (await client.chain()).blocks.map((b) => b.height);
      t.ok(contiguous(last) && last.length === Math.min(CHAIN_BLOCKS, last.at(-1)!), `beat ${i + 1}: ${last.length} contiguous blocks up to ${last.at(-1)}`);
    }
    t.ok(Math.abs(last.at(-1)! - top()) <= 2, 'up to the node’s latest');
    return byHeight;
  };
  const plain = new NodeClient(url, null, 2000);
  t.teardown(() => plain.close());
  const without = await beats(plain);
  t.ok(without >= 20, `without following: ${without} blocks read one by one over 3 beats`);

  const following = new NodeClient(url, null, 2000);
  t.teardown(() => following.close());
  const stop = following.follow(2000);
  t.teardown(stop);
  const withIt = await beats(following);
  t.ok(withIt <= 3, `following: ${withIt} blocks read one by one over 3 beats`);
  stop();
});

t.test('followPause: a share of the node’s ten blocks, from 500 ms up; none when the heartbeat is soon enough', async (t) => {
  t.equal(followPause(0, 5000), null, 'rate not known yet');
  t.equal(followPause(1 / 200, 5000), 1200, '5 blocks/s: 6 blocks take 1.2 s');
  t.equal(followPause(1 / 10, 5000), 500, '100 blocks/s: not under 500 ms');
  t.equal(followPause(1 / 1000, 5000), null, '1 block/s: 6 s, the 5 s heartbeat reads them');
});

t.test('hello names the validator; heartbeats carry chain.validators and chain.blocks', async (t) => {
  const rig = await makeRig(t, { peers: 3 });
  await rig.startNode();
  const coord = await fakeCoordinator(t);
  rig.writeConfig({ coordinator: { url: coord.url, token: 'sekret-agent-token-0123', reconnectMaxMs: 500 }, validatorPubkey: rig.node.pubkey });
  const validate = await rig.cli(['config', 'validate']);
  t.equal(validate.code, 0, validate.stderr);
  const agent = rig.spawnCli(['run']);
  t.teardown(() => {
    if (agent.exitCode === null) agent.kill('SIGKILL');
  });

  const hello = await waitFor(() => coord.got.find((m) => m.type === 'hello'), { what: 'hello', timeoutMs: 20_000 });
  t.equal(hello.type === 'hello' && hello.validatorPubkey, rig.node.pubkey, 'hello carries validatorPubkey');
  const hb = await waitFor(() => coord.got.find((m) => m.type === 'heartbeat' && (m.status.chain?.blocks.length ?? 0) >= 3), {
    what: 'a heartbeat with blocks',
    timeoutMs: 30_000,
  });
  const chain = hb.type === 'heartbeat' ? hb.status.chain! : null;
  t.match(chain?.validators, { epoch: 0, totalWeight: 4, quorumWeight: 3 });
  t.same(
    chain?.validators?.validators.map((v) => [v.name, v.pubkey, v.weight, v.active]),
    [rig.node, ...rig.others].map((d) => [d.name, d.pubkey, 1, true]),
  );
  const hs = chain!.blocks.map((b) => b.height);
  t.same(
    hs,
    [...hs].sort((a, b) => a - b),
    'blocks oldest first',
  );
  t.ok(chain!.blocks.length <= CHAIN_BLOCKS, "at most the protocol's cap");
  t.ok(
    hs.every((h, i) => i === 0 || h === hs[i - 1]! + 1),
    'contiguous heights',
  );
  const pubkeys = new Set([rig.node, ...rig.others].map((d) => d.pubkey));
  t.ok(
    chain!.blocks.every((b) => pubkeys.has(b.producer) && b.signatureCount === 3),
    'producers are validators; three signatures each (the quorum of four)',
  );

  agent.kill('SIGTERM');
  await new Promise((r) => (agent.exitCode !== null ? r(null) : agent.once('exit', r)));
  rig.writeConfig({ validatorPubkey: 'not-hex' });
  const bad = await rig.cli(['config', 'validate']);
  t.equal(bad.code, 2, 'config validate refuses a pubkey that is not hex');
  t.match(bad.stderr + bad.stdout, /validatorPubkey/);
});

t.test('a node without the chain endpoints still heartbeats: no set, no blocks', async (t) => {
  const rig = await makeRig(t);
  // An older node: health and consensus status, nothing about validators or blocks.
  const old = http.createServer((req, res) => {
    const body = (code: number, b: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(b));
    };
    if (req.url === '/health') return body(200, { status: 'up', version: '1.0.0', checks: {} });
    if (req.url === '/health/ready') return body(200, { status: 'up' });
    if (req.url === '/api/consensus/status')
      return body(200, { enabled: true, state: 'Active', view: 3, finalized_height: 7, current_leader: null, is_leader: false });
    return body(404, { error: 'not found' });
  });
  await new Promise<void>((r) => old.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise((r) => old.close(r)));
  rig.writeConfig({ node: { ...rig.config.node, apiUrl: `http://127.0.0.1:${(old.address() as { port: number }).port}`, metricsUrl: null } });
  const coord = await fakeCoordinator(t);
  const config = loadConfig(rig.configPath, {});
  const agent = new Agent(config, createLogger('warn', true));
  const conn = new Connection(agent, { url: coord.url, token: 't', nodeId: 'v0', reconnectMaxMs: 500, reconnectBaseMs: 100 }, agent.log);
  void conn.run();
  t.teardown(async () => {
    conn.stop();
    await agent.idle();
    agent.close();
  });
  const hb = await waitFor(() => coord.got.find((m) => m.type === 'heartbeat'), { what: 'heartbeat', timeoutMs: 10_000 });
  t.same(hb.type === 'heartbeat' && hb.status.chain, { validators: null, blocks: [] });
  t.equal(hb.type === 'heartbeat' && hb.status.finalizedHeight, 7, 'the rest of the status as before');
  const hello = coord.got.find((m) => m.type === 'hello');
  t.notOk(hello?.type === 'hello' && 'validatorPubkey' in hello, 'no validatorPubkey configured: none sent');
});
