/**
 * Height history: one JSON line {t, height, view, leader, node} per finalized-height
 * change, kept outside the data dir so a data-dir restore never rewinds it.
 */
import fs from 'node:fs';
import path from 'node:path';

export interface HistoryEntry {
  t: number;
  height: number;
  view: number;
  leader: string | null;
  node?: string;
}

export class HistoryWriter {
  private failed = false;
  constructor(
    readonly file: string,
    private readonly onError: (e: Error) => void = () => {},
  ) {
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true });
    } catch {
      /* reported on first append */
    }
  }
  append(e: HistoryEntry): void {
    if (this.failed) return;
    try {
      fs.appendFileSync(this.file, `${JSON.stringify(e)}\n`);
    } catch (err) {
      // History is test instrumentation; never take the node down for it.
      this.failed = true;
      this.onError(err as Error);
    }
  }
}

/** Reads one or more history files (merged, sorted by time); missing files read as empty. */
export function readHistory(file: string | string[]): HistoryEntry[] {
  const out: HistoryEntry[] = [];
  for (const f of Array.isArray(file) ? file : [file]) {
    let text: string;
    try {
      text = fs.readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const e = JSON.parse(line) as HistoryEntry;
        if (typeof e.t === 'number' && typeof e.height === 'number') out.push(e);
      } catch {
        /* torn line */
      }
    }
  }
  return out.sort((a, b) => a.t - b.t);
}

/**
 * Longest time within [from, to] during which the highest height seen so far
 * did not rise. Pass the merged history of several nodes to judge the cluster.
 */
export function maxStallMs(history: HistoryEntry[], range: { from?: number; to?: number } = {}): number {
  const sorted = [...history].sort((a, b) => a.t - b.t);
  const from = range.from ?? sorted[0]?.t ?? 0;
  const to = range.to ?? sorted.at(-1)?.t ?? from;
  let best = -Infinity;
  for (const e of sorted) if (e.t <= from) best = Math.max(best, e.height);
  let last = from;
  let worst = 0;
  for (const e of sorted) {
    if (e.t <= from) continue;
    if (e.t > to) break;
    if (e.height > best) {
      worst = Math.max(worst, e.t - last);
      best = e.height;
      last = e.t;
    }
  }
  return Math.max(worst, to - last);
}
