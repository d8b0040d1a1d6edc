/**
 * Observations a scenario asserts on, computed from what really happened:
 * the sampler's health probes of every node, the nodes' own height histories,
 * and the coordinator's event log.
 */
import type { EventRow } from '@guts-upgrade/coordinator';
import type { HistoryEntry } from '@guts-upgrade/simulator';

/** One probe of one node by the sampler running in the lab netns. */
export interface Sample {
  /** Round number: every node is probed once per round, in parallel. */
  r: number;
  t: number;
  node: string;
  /**
   * GET /p2p/status answered 200 with ready and not syncing (true), answered
   * otherwise or refused the connection (false), or timed out (null: unknown).
   */
  up: boolean | null;
  version: string | null;
}

export interface Interval {
  node: string;
  from: number;
  to: number;
}

export interface DownStats {
  /** Most nodes not up in a single sampling round (only rounds that probed every node). */
  maxDown: number;
  /** Nodes down in that round. */
  maxDownNodes: string[];
  rounds: number;
  /** Per node, the intervals during which it was not up (first..last failed probe). */
  intervals: Interval[];
}

/** Max nodes down at the same moment, from the sampler's rounds within [from, to]. */
export function downFromSamples(samples: Sample[], nodes: string[], range: { from?: number; to?: number } = {}): DownStats {
  const byRound = new Map<number, Sample[]>();
  for (const s of samples) {
    if (range.from !== undefined && s.t < range.from) continue;
    if (range.to !== undefined && s.t > range.to) continue;
    let a = byRound.get(s.r);
    if (!a) {
      a = [];
      byRound.set(s.r, a);
    }
    a.push(s);
  }
  let maxDown = 0;
  let maxDownNodes: string[] = [];
  let rounds = 0;
  for (const ss of byRound.values()) {
    if (new Set(ss.map((s) => s.node)).size < nodes.length) continue;
    rounds++;
    const down = ss.filter((s) => s.up === false).map((s) => s.node);
    if (down.length > maxDown) {
      maxDown = down.length;
      maxDownNodes = down;
    }
  }
  const intervals: Interval[] = [];
  for (const n of nodes) {
    let cur: Interval | null = null;
    for (const s of samples.filter((x) => x.node === n).sort((a, b) => a.t - b.t)) {
      if (range.from !== undefined && s.t < range.from) continue;
      if (range.to !== undefined && s.t > range.to) continue;
      if (s.up === null) continue;
      if (!s.up) {
        if (cur) cur.to = s.t;
        else cur = { node: n, from: s.t, to: s.t };
      } else if (cur) {
        intervals.push(cur);
        cur = null;
      }
    }
    if (cur) intervals.push(cur);
  }
  return { maxDown, maxDownNodes, rounds, intervals };
}

/** Max overlap of intervals (how many at once), with the nodes at that moment. */
export function maxOverlap(intervals: Interval[]): { max: number; nodes: string[] } {
  const points = intervals.flatMap((i) => [
    { t: i.from, d: 1, node: i.node },
    { t: i.to, d: -1, node: i.node },
  ]);
  // Ends before starts at the same instant: touching intervals do not overlap.
  points.sort((a, b) => a.t - b.t || a.d - b.d);
  const open = new Map<string, number>();
  let max = 0;
  let nodes: string[] = [];
  for (const p of points) {
    open.set(p.node, (open.get(p.node) ?? 0) + p.d);
    if ((open.get(p.node) ?? 0) <= 0) open.delete(p.node);
    if (open.size > max) {
      max = open.size;
      nodes = [...open.keys()];
    }
  }
  return { max, nodes };
}

/** An audit-log event as GET /api/v1/rollouts/:id/events returns it. */
export type { EventRow } from '@guts-upgrade/coordinator';

/**
 * Per node, the time its agent had guts-node out of service, as the
 * coordinator heard it: from the `stop` step starting to the command's result
 * (an upper bound: it includes the verification window).
 */
export function downFromEvents(events: EventRow[]): Interval[] {
  const out: Interval[] = [];
  const open = new Map<string, number>();
  for (const e of events) {
    if (!e.nodeId) continue;
    const at = Date.parse(e.at);
    if (e.type === 'node.progress' && e.data.step === 'stop' && e.data.state === 'started') {
      if (!open.has(e.nodeId)) open.set(e.nodeId, at);
    } else if (e.type === 'command.result') {
      const from = open.get(e.nodeId);
      if (from !== undefined) {
        out.push({ node: e.nodeId, from, to: at });
        open.delete(e.nodeId);
      }
    }
  }
  // Still open at the end (no result heard): open until the last event.
  const last = events.length ? Date.parse(events[events.length - 1]!.at) : 0;
  for (const [node, from] of open) out.push({ node, from, to: Math.max(from, last) });
  return out;
}

/** Upgrade commands the coordinator dispatched, per node (command ids). */
export function dispatchedUpgrades(events: EventRow[]): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const e of events) {
    if (e.type !== 'command.sent' || !e.nodeId || e.data.kind !== 'upgrade') continue;
    const a = m.get(e.nodeId) ?? [];
    const id = String(e.data.commandId);
    if (!a.includes(id)) a.push(id);
    m.set(e.nodeId, a);
  }
  return m;
}

/** Highest height in a merged history at or before t. */
export function heightAt(history: HistoryEntry[], t: number): number {
  let h = 0;
  for (const e of history) if (e.t <= t && e.height > h) h = e.height;
  return h;
}

/**
 * For every interval of at least minMs, did the chain (the merged history of
 * all nodes) finalize a new block inside it? Returns the intervals where it
 * did not.
 */
export function intervalsWithoutProgress(history: HistoryEntry[], intervals: Interval[], minMs: number): Interval[] {
  return intervals.filter((i) => i.to - i.from >= minMs && heightAt(history, i.to) <= heightAt(history, i.from));
}

export function fmtMs(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}
