/**
 * In-memory copies of the rows the rollout loop reads whole on every tick: the
 * rollouts it decides (their JSON columns parsed), a rollout's steps, a
 * rollout's commands (without bodies) and the open commands. At 2,000 nodes,
 * reading them again per tick was the loop's largest cost (CPU profiles of the
 * scale bench: the two command reads were 9 % of the coordinator's samples
 * during a rollout, parsing the rollout rows' node lists 12 %, and each progress
 * message made the next tick read 2,000 steps again).
 *
 * The store puts into a copy the row SQLite itself returns from each write
 * (RETURNING), so a copy never differs from what a fresh SELECT gives; a failed
 * transaction drops every copy (loaded again on the next read). SQLite stays the
 * only state: nothing here survives a restart, and nothing here is written first.
 */
import type { CommandRecord, Rollout, Step } from './model.js';

/**
 * How many rollouts keep their copies: the active ones are read on every tick,
 * a finished one only from the API. The least recently read goes first.
 */
const ROLLOUTS_KEPT = 8;

/** A map that keeps the `limit` most recently used keys. */
class RecentMap<V> {
  private readonly m = new Map<string, V>();
  constructor(private readonly limit: number) {}

  get(key: string): V | undefined {
    const v = this.m.get(key);
    if (v !== undefined) {
      // Re-inserting moves the key to the end: the first key is the least recently used.
      this.m.delete(key);
      this.m.set(key, v);
    }
    return v;
  }

  peek(key: string): V | undefined {
    return this.m.get(key);
  }

  set(key: string, v: V): void {
    this.m.delete(key);
    this.m.set(key, v);
    if (this.m.size > this.limit) this.m.delete(this.m.keys().next().value!);
  }

  delete(key: string): void {
    this.m.delete(key);
  }

  clear(): void {
    this.m.clear();
  }
}

/** A rollout's steps in position order, and where each node's step is in that order. */
interface StepCopy {
  list: Readonly<Step>[];
  at: Map<string, number>;
}

export class StepMirror {
  private readonly byRollout = new RecentMap<StepCopy>(ROLLOUTS_KEPT);

  /** The rollout's steps in position order; `load` reads them from SQLite when there is no copy. */
  steps(rolloutId: string, load: () => Step[]): Step[] {
    let copy = this.byRollout.get(rolloutId);
    if (!copy) {
      const list = load().map((s) => Object.freeze(s));
      copy = { list, at: new Map(list.map((s, i) => [s.nodeId, i])) };
      this.byRollout.set(rolloutId, copy);
    }
    return [...copy.list];
  }

  /** A step as SQLite returned it from a write. */
  put(step: Step): void {
    const copy = this.byRollout.peek(step.rolloutId);
    if (!copy) return;
    const i = copy.at.get(step.nodeId);
    if (i === undefined) this.byRollout.delete(step.rolloutId);
    else copy.list[i] = Object.freeze(step);
  }

  /** A step was added: the rollout's order is read again. */
  drop(rolloutId: string): void {
    this.byRollout.delete(rolloutId);
  }

  clear(): void {
    this.byRollout.clear();
  }
}

export class CommandMirror {
  private readonly byRollout = new RecentMap<Map<string, Readonly<CommandRecord>>>(ROLLOUTS_KEPT);
  /** Open commands in creation order. */
  private open: Map<string, Readonly<CommandRecord>> | null = null;
  /** The latest creation time in `open`: a command that opens before it would break the order. */
  private openUntil = Number.NEGATIVE_INFINITY;

  constructor(private readonly isOpen: (c: CommandRecord) => boolean) {}

  /** The rollout's commands by id; `load` reads them from SQLite when there is no copy. */
  forRollout(rolloutId: string, load: () => CommandRecord[]): Map<string, CommandRecord> {
    let copy = this.byRollout.get(rolloutId);
    if (!copy) {
      copy = new Map(load().map((c) => [c.id, Object.freeze(c)]));
      this.byRollout.set(rolloutId, copy);
    }
    return new Map(copy);
  }

  /** The commands without a result, oldest first; `load` reads them from SQLite when there is no copy. */
  openOnes(load: () => CommandRecord[]): CommandRecord[] {
    if (!this.open) {
      this.open = new Map();
      this.openUntil = Number.NEGATIVE_INFINITY;
      for (const c of load()) this.addOpen(c);
    }
    return [...this.open.values()];
  }

  /** An open command by id, when the open ones are kept (the agents' acks, progress and results are about those). */
  openOne(id: string): CommandRecord | undefined {
    return this.open?.get(id);
  }

  /** A command as SQLite returned it from a write (an insert or a state change). */
  put(c: CommandRecord): void {
    const frozen = Object.freeze(c);
    if (c.rolloutId !== null) this.byRollout.peek(c.rolloutId)?.set(c.id, frozen);
    if (!this.open) return;
    if (!this.isOpen(c)) this.open.delete(c.id);
    else if (this.open.has(c.id)) this.open.set(c.id, frozen);
    // A command opening out of creation order (the state table has no such move, but a copy must
    // never disagree with SQLite): read the open ones again rather than sort here.
    else if (c.createdAt < this.openUntil) this.open = null;
    else this.addOpen(frozen);
  }

  private addOpen(c: CommandRecord): void {
    this.open!.set(c.id, Object.freeze(c));
    this.openUntil = Math.max(this.openUntil, c.createdAt);
  }

  clear(): void {
    this.byRollout.clear();
    this.open = null;
  }
}

/** Rollouts as parsed from their rows, frozen all the way down (the loop only reads them). */
export class RolloutMirror {
  private readonly byId = new RecentMap<Readonly<Rollout>>(ROLLOUTS_KEPT);

  /** The rollout; `load` reads its row when there is no copy (undefined: no such rollout, nothing kept). */
  rollout(id: string, load: () => Rollout | undefined): Rollout | undefined {
    const kept = this.byId.get(id);
    if (kept) return kept;
    const r = load();
    if (r) this.byId.set(id, deepFreeze(r));
    return r;
  }

  /** A rollout as SQLite returned it from a write. */
  put(r: Rollout): void {
    if (this.byId.peek(r.id)) this.byId.set(r.id, deepFreeze(r));
  }

  clear(): void {
    this.byId.clear();
  }
}

function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}
