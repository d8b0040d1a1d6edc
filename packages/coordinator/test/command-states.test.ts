/**
 * The command lifecycle table, and the store following it on a real SQLite
 * file: which commands count as open, and which states an informational mark
 * ('sent', 'accepted') may overwrite.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../src/db.js';
import {
  COMMAND_OPEN_STATES,
  COMMAND_STATES,
  COMMAND_TRANSITIONS,
  canCommandMove,
  commandStatesInto,
  isCommandFinished,
  type CommandState,
} from '../src/states.js';

t.test('the command table', async (t) => {
  for (const [from, tos] of Object.entries(COMMAND_TRANSITIONS)) {
    for (const to of tos) t.ok(COMMAND_STATES.includes(to), `${from} -> ${to} names a known state`);
  }
  t.same(COMMAND_TRANSITIONS.completed, [], 'a result is final');
  t.same(commandStatesInto('sent'), ['pending'], "only a pending command is marked 'sent'");
  t.same(commandStatesInto('accepted'), COMMAND_OPEN_STATES, 'an ack moves any open command, never an answered one');
  t.ok(canCommandMove('rejected', 'completed'), 'a late result still completes a rejected command');
  t.notOk(canCommandMove('completed', 'rejected'), 'a rejection never undoes a result');
  t.same(COMMAND_STATES.filter(isCommandFinished), ['rejected', 'completed']);
  for (const s of COMMAND_OPEN_STATES) t.ok(canCommandMove(s, 'completed'), `${s} can still get its result`);
});

t.test('the store follows the table', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'guc-cmd-'));
  const store = new Store(join(dir, 'c.db'));
  t.teardown(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const idOf = (s: CommandState) => `c-${s}`;
  for (const state of COMMAND_STATES) {
    store.insertCommand({
      id: idOf(state),
      nodeId: `n-${state}`,
      rolloutId: null,
      kind: 'upgrade',
      digest: 'd',
      body: '{}',
      state,
      createdAt: 1,
      updatedAt: 1,
    });
  }
  t.same(
    store
      .openCommands()
      .map((c) => c.state)
      .sort(),
    [...COMMAND_OPEN_STATES].sort(),
    'open commands are the open states',
  );
  t.same(
    store.openCommands('n-sent').map((c) => c.id),
    ['c-sent'],
    "one node's open commands, with bodies",
  );
  t.same(store.openCommands('n-completed'), [], 'an answered command is not open');

  for (const state of COMMAND_STATES) store.advanceCommandState(idOf(state), 'sent', commandStatesInto('sent'), 2);
  t.same(
    COMMAND_STATES.map((s) => store.command(idOf(s))!.state),
    ['sent', 'sent', 'accepted', 'duplicate', 'rejected', 'completed'],
    "the 'sent' mark moves only the pending command",
  );
  for (const state of COMMAND_STATES) store.advanceCommandState(idOf(state), 'accepted', commandStatesInto('accepted'), 3);
  t.same(
    COMMAND_STATES.map((s) => store.command(idOf(s))!.state),
    ['accepted', 'accepted', 'accepted', 'accepted', 'rejected', 'completed'],
    'an ack never overwrites an answer',
  );
});
