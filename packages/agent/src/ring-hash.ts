/**
 * The sha256 of an archive as its bytes pass through the writer's ring: on a
 * worker thread for large archives (hashing then runs on another core while
 * the thread pool reads and writes), on this thread for small ones, where
 * starting the worker (25-50 ms) costs more than hashing the bytes (about
 * 0.6 ms per MiB) — the delta written after the node stopped is usually small,
 * and every millisecond of it is downtime.
 */
import { createHash } from 'node:crypto';
import { Sha256Worker } from './sha256-worker.js';

/** Below this many bytes of file data an archive is hashed on this thread (under 10 ms of hashing). */
export const INLINE_HASH_MAX_BYTES = 16 * 1024 * 1024;

export interface RingHasher {
  /** Hashes ring[offset, offset + length); resolves once that region may be reused. */
  update(offset: number, length: number): Promise<void>;
  /** The hex digest of everything hashed so far, in the order update() was called. */
  digest(): Promise<string>;
  close(): Promise<void>;
}

class InlineSha256 implements RingHasher {
  private readonly hash = createHash('sha256');
  private readonly ring: Buffer;

  constructor(ring: SharedArrayBuffer) {
    this.ring = Buffer.from(ring);
  }

  async update(offset: number, length: number): Promise<void> {
    this.hash.update(this.ring.subarray(offset, offset + length));
  }

  async digest(): Promise<string> {
    return this.hash.digest('hex');
  }

  async close(): Promise<void> {}
}

/** `expectedBytes`: the file data the caller expects to archive (unknown: the worker). */
export function ringHasher(ring: SharedArrayBuffer, expectedBytes: number | undefined): RingHasher {
  return expectedBytes !== undefined && expectedBytes <= INLINE_HASH_MAX_BYTES ? new InlineSha256(ring) : new Sha256Worker(ring);
}
