/**
 * The chain's clock as the load generator plays it and the makespan bench
 * replays it: views of viewMs from genesis, the leader of view v is active
 * validator v mod k (guts-consensus' rule), and a view whose leader is down
 * produces no block. One definition, so the ideal the bench computes and the
 * chain the coordinator is shown run on the same clock.
 */
export function chainClock({ genesis, viewMs, validators }) {
  const k = validators.length;
  return {
    viewAt: (t) => Math.max(0, Math.floor((t - genesis) / viewMs)),
    viewStart: (v) => genesis + v * viewMs,
    leaderOf: (v) => validators[v % k],
    /** The first view at or after time t that validator index i leads. */
    nextTurn(i, t) {
      let v = Math.max(0, Math.ceil((t - genesis) / viewMs));
      v += (((i - (v % k)) % k) + k) % k;
      return v;
    },
  };
}
