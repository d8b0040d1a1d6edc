/**
 * The store's in-memory copies of steps and commands (row-mirror.ts) against
 * SQLite itself: after every write of a seeded random sequence (inserts, state
 * changes, results, progress, step patches, failed transactions, more rollouts
 * than the copies keep), what the store returns equals what a second connection,
 * with no copies at all, reads from the same file.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../src/db.js';
import { COMMAND_STATES, STEP_STATES, type CommandState } from '../src/states.js';
import { rng, rolloutOf, stepsOf } from './helpers.js';

const NODES = ['a', 'b', 'c', 'd', 'e'];
/** More rollouts than the copies keep (8), so some are dropped and read again. */
const ROLLOUTS = Array.from({ length: 11 }, (_, i) => `r${i}`);

function open(t: Test): { store: Store; fresh: () => Store } {
  const dir = mkdtempSync(join(tmpdir(), 'guc-mirror-'));
  const file = join(dir, 'c.db');
  const store = new Store(file);
  const readers: Store[] = [];
  t.teardown(() => {
    for (const r of readers) r.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  for (const id of ROLLOUTS) {
    store.insertRollout(rolloutOf(NODES, { id }));
    for (const s of stepsOf(NODES)) store.insertStep({ ...s, rolloutId: id });
  }
  return {
    store,
    // A store opened on the same file reads everything from SQLite (its copies start empty).
    fresh: () => {
      const r = new Store(file);
      readers.push(r);
      return r;
    },
  };
}

const byId = <T extends { id: string }>(m: Map<string, T>) => [...m.values()].sort((x, y) => x.id.localeCompare(y.id));

t.test('copies equal SQLite after every write of a random sequence', async (t) => {
  for (const seed of [1, 2, 3]) {
    const { store, fresh } = open(t);
    const rand = rng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const ids: string[] = [];
    let checks = 0;
    for (let i = 0; i < 400; i++) {
      const now = 1000 + i;
      const r = rand();
      const rolloutId = pick(ROLLOUTS);
      if (r < 0.2 || ids.length === 0) {
        const id = `c${i}`;
        ids.push(id);
        store.insertCommand({
          id,
          nodeId: pick(NODES),
          rolloutId,
          kind: 'upgrade',
          digest: 'd',
          body: '{"b":1}',
          state: 'pending',
          createdAt: now,
          updatedAt: now,
        });
      } else if (r < 0.4) {
        store.advanceCommandState(pick(ids), pick(['sent', 'accepted', 'duplicate'] as CommandState[]), ['pending', 'sent'], now);
      } else if (r < 0.5) {
        store.setCommandState(pick(ids), pick(COMMAND_STATES), now, { code: 'E_INTERNAL', message: `m${i}` });
      } else if (r < 0.6) {
        store.completeCommand(
          pick(ids),
          { outcome: 'succeeded', code: null, message: null, runningVersion: '1.1.0', downtimeMs: i, stoppedAtView: i, result: { i } },
          now,
        );
      } else if (r < 0.75) {
        store.updateStep(
          rolloutId,
          pick(NODES),
          { state: pick(STEP_STATES), commandId: pick(ids), attempt: i, evidence: rand() < 0.3 ? null : undefined },
          now,
        );
      } else if (r < 0.85) {
        store.setProgressForCommand(pick(ids), `step-${i}:running`, now);
      } else if (r < 0.95) {
        // A transaction that writes, then fails: SQLite rolls back, the copies must not keep the write.
        t.throws(() =>
          store.tx(() => {
            store.setCommandState(pick(ids), 'completed', now);
            store.updateStep(rolloutId, pick(NODES), { state: 'failed', code: 'E_INTERNAL' }, now);
            throw new Error('rolled back');
          }),
        );
      }
      // Reads fill the copies (of a random rollout, so the eight-rollout bound is crossed).
      const read = pick(ROLLOUTS);
      const reader = fresh();
      const same =
        JSON.stringify(byId(store.commandsFor(read))) === JSON.stringify(byId(reader.commandsFor(read))) &&
        JSON.stringify(store.steps(read)) === JSON.stringify(reader.steps(read)) &&
        JSON.stringify(
          store
            .openCommands()
            .map((c) => c.id)
            .sort(),
        ) ===
          JSON.stringify(
            reader
              .openCommands()
              .map((c) => c.id)
              .sort(),
          ) &&
        JSON.stringify(store.openCommands()) === JSON.stringify(reader.openCommands().sort((x, y) => x.createdAt - y.createdAt));
      if (!same) {
        t.same(
          { commands: byId(store.commandsFor(read)), steps: store.steps(read), open: store.openCommands() },
          { commands: byId(reader.commandsFor(read)), steps: reader.steps(read), open: reader.openCommands().sort((x, y) => x.createdAt - y.createdAt) },
          'what differs',
        );
        t.fail(`seed ${seed}, write ${i}: the copies differ from SQLite for ${read}`);
        return;
      }
      reader.close();
      checks++;
    }
    t.equal(checks, 400, `seed ${seed}: 400 writes, the copies equal SQLite after each`);
  }
});

t.test('a copy is what the loop reads: frozen, and a caller changing its list changes nothing', async (t) => {
  const { store } = open(t);
  store.insertCommand({ id: 'x', nodeId: 'a', rolloutId: 'r0', kind: 'upgrade', digest: 'd', body: '{}', state: 'pending', createdAt: 1, updatedAt: 1 });
  const cmds = store.commandsFor('r0');
  t.ok(Object.isFrozen(cmds.get('x')), 'a command record is frozen');
  cmds.delete('x');
  t.ok(store.commandsFor('r0').has('x'), 'deleting from the returned map leaves the copy');
  const steps = store.steps('r0');
  t.ok(Object.isFrozen(steps[0]), 'a step is frozen');
  steps.pop();
  t.equal(store.steps('r0').length, NODES.length, 'changing the returned list leaves the copy');
  t.same(
    store.openCommands().map((c) => c.id),
    ['x'],
  );
  store.completeCommand('x', { outcome: 'succeeded', code: null, message: null, runningVersion: '1.1.0', downtimeMs: 1, stoppedAtView: null, result: {} }, 2);
  t.same(store.openCommands(), [], 'a completed command leaves the open ones');
  t.equal(store.commandsFor('r0').get('x')?.state, 'completed', "and its rollout's copy shows the result");
});
