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
  const block = (id: string, view: number): Block => ({
    height: 1,
    block_id: id.repeat(64),
    parent_id: ZERO_ID,
    producer: 'p',
    producer_name: 'v1',
    timestamp: 0,
    tx_count: 0,
    tx_root: '',
    state_root: '',
    view,
    signature_count: 0,
  });
  t.equal(c.onPropose(block('a', v)), true, 'first proposal of a view: voted');
  t.equal(c.onPropose(block('b', v)), false, 'another block in the same view: refused');
  t.equal(c.onPropose(block('a', v)), true, 'the same proposal re-sent: the vote stands');
  t.equal(c.onPropose(block('c', v + 1)), true, "the next view's leader gets the vote at once");
  t.equal(c.onPropose(block('d', v)), false, 'a leader whose view is over: refused');
  t.equal(c.onPropose({ ...block('e', v + 2), height: 2 }), false, 'not the next height: refused');
});
