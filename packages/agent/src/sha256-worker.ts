/**
 * sha256 of a byte stream on a worker thread, fed from a shared ring of
 * buffers: the agent's event loop (heartbeats, the coordinator's socket) never
 * waits on hashing, and hashing runs on another core while the thread pool
 * reads and writes the next slots.
 *
 * The worker's code is a string (eval: true) rather than a file beside this
 * one, so it survives bundling into the packaged agent's single file.
 */
import { Worker } from 'node:worker_threads';
import { CodedError } from '@guts-upgrade/protocol';

// [offset, length] hashes that region of the ring and answers with the offset; null answers with the hex digest.
const WORKER_CODE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const ring = Buffer.from(workerData.ring);
const hash = createHash('sha256');
parentPort.on('message', (m) => {
  if (m === null) {
    parentPort.postMessage(hash.digest('hex'));
    return;
  }
  hash.update(ring.subarray(m[0], m[0] + m[1]));
  parentPort.postMessage(m[0]);
});
`;

export class Sha256Worker {
  private readonly worker: Worker;
  // Answers come back in the order requests went out (one worker, one message port).
  private readonly waiting: { resolve: (v: unknown) => void; reject: (e: Error) => void }[] = [];
  private failed: Error | null = null;

  /** `ring`: the shared memory the regions handed to update() live in. */
  constructor(ring: SharedArrayBuffer) {
    // A small heap is enough: the worker holds no data of its own, only the hash state.
    this.worker = new Worker(WORKER_CODE, { eval: true, workerData: { ring }, resourceLimits: { maxOldGenerationSizeMb: 8, maxYoungGenerationSizeMb: 2 } });
    this.worker.on('message', (m: unknown) => this.waiting.shift()?.resolve(m));
    const fail = (err: Error) => {
      this.failed ??= new CodedError('E_BACKUP', `the hashing thread failed: ${err.message}`);
      for (const w of this.waiting.splice(0)) w.reject(this.failed);
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`exited with code ${code}`)));
  }

  private ask(msg: [number, number] | null): Promise<unknown> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.worker.postMessage(msg);
    });
  }

  /** Hashes ring[offset, offset + length); resolves once the worker is done with that region (it may then be reused). */
  async update(offset: number, length: number): Promise<void> {
    await this.ask([offset, length]);
  }

  /** The digest of everything hashed so far, in the order update() was called. */
  async digest(): Promise<string> {
    return (await this.ask(null)) as string;
  }

  async close(): Promise<void> {
    this.failed ??= new Error('closed');
    await this.worker.terminate();
  }
}
