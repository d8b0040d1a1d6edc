/** Outside probes: what the nodes themselves say, never what the coordinator believes. */
import type { FleetNode } from '@guts-upgrade/testkit';
import type { Rig } from './harness.js';

/**
 * Polls every validator's node (managed and not) and records the lowest weight up.
 * A node is down when it refuses the connection or answers not ready. A probe that
 * only timed out (20 processes on 2 cores can stall a healthy node's answer past a
 * second) is asked again with a longer limit before it counts as down, so the figure
 * is about the nodes, not the probe; a second timeout still counts as down.
 */
export function weightProbe(rig: Pick<Rig, 'fleet'>) {
  const all: FleetNode[] = [...rig.fleet.nodes, ...rig.fleet.unmanaged];
  let weights = all.map((n) => n.weight);
  let lowest = Infinity;
  let lowestDown: string[] = [];
  let samples = 0;
  let retried = 0;
  let stop = false;
  const ask = (n: FleetNode, ms: number): Promise<'up' | 'down' | 'timeout'> =>
    fetch(`${n.apiUrl}/health/ready`, { signal: AbortSignal.timeout(ms) }).then(
      (r) => (r.ok ? 'up' : 'down'),
      (e: Error) => (e.name === 'TimeoutError' ? 'timeout' : 'down'),
    );
  const loop = (async () => {
    while (!stop) {
      const up = await Promise.all(
        all.map(async (n) => {
          const first = await ask(n, 1000);
          if (first !== 'timeout') return first === 'up';
          retried++;
          return (await ask(n, 5000)) === 'up';
        }),
      );
      const weight = up.reduce((s, u, i) => s + (u ? (weights[i] ?? 0) : 0), 0);
      if (weight < lowest) {
        lowest = weight;
        lowestDown = all.filter((_, i) => !up[i]).map((n) => n.id);
      }
      samples++;
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  return {
    /** A new epoch's weights (in validator order). */
    reweigh(w: number[]) {
      weights = w;
    },
    async stop() {
      stop = true;
      await loop;
      return { lowest, lowestDown, samples, retried };
    },
  };
}
