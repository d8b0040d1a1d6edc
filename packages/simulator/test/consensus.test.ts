import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { ChainStore, Consensus, HistoryWriter, Logger, ZERO_ID, createCluster, parseArgs, resolveConfig, waitFor, type Block } from '../src/index.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sim-consensus-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

t.test('a validator votes once per height and view; a later view may take the vote', async (t) => {
  // v0 of a 4-validator config whose peers are not running: their ports refuse,
  // so v0 is not syncing and answers proposals on its own rules.
  const [d] = await createCluster({ n: 4, dir: path.join(tmp, 'c') });
  const cfg = resolveConfig(parseArgs(['--config', d!.configPath]), {});
  const c = new Consensus(cfg, new ChainStore(cfg.dataDir), new Logger('error'), new HistoryWriter(cfg.historyFile), () => true, '1.0.0');
  c.start();
  await waitFor(() => !c.syncing, { what: 'first peer poll' });
  c.stop();

  // Views far ahead of the clock, clear of any proposal v0 made of its own meanwhile.
  const v = c.view + 100;
  // Each proposal comes from its view's leader: a validator votes for no one else.
  const block = (id: string, view: number): Block => ({
    height: 1,
    block_id: id.repeat(64),
    parent_id: ZERO_ID,
    producer: c.leaderOf(view)!.pubkey,
    producer_name: c.leaderOf(view)!.name,
    timestamp: 0,
    tx_count: 0,
    tx_root: '',
    state_root: '',
    view,
    signature_count: 0,
  });
  t.equal(await c.onPropose(block('a', v)), true, 'first proposal of a view: voted');
  t.equal(await c.onPropose(block('b', v)), false, 'another block in the same view: refused');
  t.equal(await c.onPropose(block('a', v)), true, 'the same proposal re-sent: the vote stands');
  t.equal(await c.onPropose(block('c', v + 1)), true, "the next view's leader gets the vote at once");
  t.equal(await c.onPropose(block('d', v)), false, 'a leader whose view is over: refused');
  t.equal(await c.onPropose({ ...block('e', v + 2), height: 2 }), false, 'not the next height: refused');
  t.equal(await c.onPropose({ ...block('f', v + 3), producer: c.leaderOf(v + 4)!.pubkey }), false, "a proposal not from its view's leader: refused");
});

t.test('the leader rule, the weighted quorum and minimal certificates, offline', async (t) => {
  const [d] = await createCluster({ n: 4, dir: path.join(tmp, 'w'), weights: [5, 1, 1, 1] });
  const cfg = resolveConfig(parseArgs(['--config', d!.configPath]), {});
  const c = new Consensus(cfg, new ChainStore(cfg.dataDir), new Logger('error'), new HistoryWriter(cfg.historyFile), () => true, '1.0.0');
  t.equal(c.activeWeight, 8);
  t.equal(c.quorumWeight, 6, 'ceil(2/3 × 8)');
  for (let v = 0; v < 12; v++) t.equal(c.leaderOf(v)?.name, `v${v % 4}`, `view ${v}: index v mod 4`);
  const [v1, v2, v3] = cfg.validators.slice(1);
  t.same(
    c.certificate([v1!, v2!, v3!])?.map((v) => v.name),
    ['v0', 'v1'],
    'weight 5 leads: its own vote and one more reach 6',
  );
  t.equal(c.certificate([]), null, 'alone, 5 < 6: no certificate');

  // An epoch change re-weighs and re-orders the leaders among the active ones.
  c.epochs.set({ epoch: 1, weights: [0, 1, 1, 4] });
  t.equal(c.activeWeight, 6);
  t.equal(c.quorumWeight, 4);
  t.same(
    [0, 1, 2, 3].map((v) => c.leaderOf(v)?.name),
    ['v1', 'v2', 'v3', 'v1'],
    'v0 is inactive: three leaders in turn',
  );
  t.throws(() => c.epochs.set({ epoch: 1, weights: [1, 1, 1, 1] }), /not after the current epoch/, 'same number, other weights: refused');
  t.throws(() => c.epochs.set({ epoch: 2, weights: [1, 1] }), /4 non-negative integers/);
  t.equal(c.epochs.set({ epoch: 1, weights: [0, 1, 1, 4] }), false, 'the same epoch again: no change');
});
