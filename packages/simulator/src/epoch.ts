/**
 * The validator set's epochs. Genesis (epoch 0) is the config's validators
 * list; a later epoch keeps the same validators, in the same order, with new
 * weights and active flags. On a real chain an epoch change is itself chain
 * state; here a test sets it on each node (POST /sim/epoch) and a node that
 * missed it (stopped, restarting) adopts the highest epoch its peers report.
 *
 * The current epoch is kept in a file beside the data dir (like the height
 * history), so a restart keeps it and a data-dir restore does not rewind it.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { ChainValidator } from '@guts-upgrade/protocol/chain';
import type { ValidatorSpec } from './config.js';
import { writeFileAtomic } from './storage.js';

export interface Epoch {
  epoch: number;
  /** One weight per validator, in the config's order. */
  weights: number[];
  /** One flag per validator, in the config's order. */
  active: boolean[];
}

export class EpochError extends Error {
  constructor(
    message: string,
    readonly status: 400 | 409,
  ) {
    super(message);
  }
}

/** Where a node keeps its epoch: beside its data dir, never inside it. */
export function epochFileFor(dataDir: string): string {
  const abs = path.resolve(dataDir);
  return path.join(path.dirname(abs), `${path.basename(abs)}.epoch.json`);
}

/** Checks an epoch for this validators list; throws EpochError (400) naming what is wrong. */
export function parseEpoch(raw: unknown, n: number): Epoch {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new EpochError('an epoch is a JSON object { epoch, weights, active? }', 400);
  const o = raw as Record<string, unknown>;
  const epoch = o.epoch;
  if (typeof epoch !== 'number' || !Number.isInteger(epoch) || epoch < 0)
    throw new EpochError(`epoch must be a non-negative integer, got ${JSON.stringify(epoch)}`, 400);
  const weights = o.weights;
  if (!Array.isArray(weights) || weights.length !== n || !weights.every((w) => typeof w === 'number' && Number.isInteger(w) && w >= 0)) {
    throw new EpochError(`weights must be ${n} non-negative integers (one per validator, in the config's order), got ${JSON.stringify(weights)}`, 400);
  }
  let active: boolean[];
  if (o.active === undefined || o.active === null) active = (weights as number[]).map((w) => w > 0);
  else if (Array.isArray(o.active) && o.active.length === n && o.active.every((a) => typeof a === 'boolean')) active = o.active as boolean[];
  else throw new EpochError(`active must be ${n} booleans (one per validator), got ${JSON.stringify(o.active)}`, 400);
  return { epoch, weights: [...(weights as number[])], active };
}

const same = (a: Epoch, b: Epoch) => a.epoch === b.epoch && a.weights.join() === b.weights.join() && a.active.join() === b.active.join();

export class EpochStore {
  private cur: Epoch;

  constructor(
    readonly validators: readonly ValidatorSpec[],
    readonly file: string | null,
    private readonly onError: (e: Error) => void = () => {},
  ) {
    this.cur = { epoch: 0, weights: validators.map((v) => v.weight), active: validators.map((v) => v.active) };
    if (file) {
      try {
        const saved = parseEpoch(JSON.parse(fs.readFileSync(file, 'utf8')), validators.length);
        if (saved.epoch > 0) this.cur = saved;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.onError(e as Error);
      }
    }
  }

  get current(): Epoch {
    return this.cur;
  }

  /** The set in the chain's terms, in the config's (the chain's) order. */
  chainValidators(): ChainValidator[] {
    return this.validators.map((v, i) => ({ name: v.name, pubkey: v.pubkey, weight: this.cur.weights[i]!, active: this.cur.active[i]! }));
  }

  /** Weight of a validator in this epoch; 0 when inactive or unknown. */
  weightOf(name: string): number {
    const i = this.validators.findIndex((v) => v.name === name);
    return i >= 0 && this.cur.active[i] ? this.cur.weights[i]! : 0;
  }

  /**
   * Moves to `raw` (an Epoch). Returns whether anything changed: the same
   * epoch again is a no-op; an older epoch, or the current number with other
   * weights, is a conflict (409).
   */
  set(raw: unknown): boolean {
    const next = parseEpoch(raw, this.validators.length);
    if (same(next, this.cur)) return false;
    if (next.epoch <= this.cur.epoch) {
      throw new EpochError(
        `epoch ${next.epoch} is not after the current epoch ${this.cur.epoch}${next.epoch === this.cur.epoch ? ' (which has other weights)' : ''}`,
        409,
      );
    }
    this.cur = next;
    if (this.file) {
      try {
        writeFileAtomic(this.file, `${JSON.stringify(next)}\n`);
      } catch (e) {
        this.onError(e as Error);
      }
    }
    return true;
  }
}
