/** Renders bench results as markdown tables. */
import { fmtBytes } from './common.js';

const v = (x, unit = '') => (x == null ? '–' : `${x}${unit}`);
const s = (ms) => (ms == null ? '–' : `${(ms / 1000).toFixed(2)} s`);

function table(head, rows) {
  return [`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

export function renderMarkdown(out) {
  const r = out.results;
  const parts = [];
  parts.push(`# guts-upgrade bench (${out.mode})`);
  parts.push(
    `${out.startedAt}, ${out.durationSec} s; ${out.machine.cpus} × ${out.machine.cpuModel}, ${out.machine.memGiB} GiB, Node ${out.machine.node}, load average at the end ${out.machine.loadavg.join(' / ')}. Ratios compare runs made side by side in this one run; no figure is a pass/fail test.`,
  );

  if (r.makespan) {
    const m = r.makespan;
    const st = m.settings;
    parts.push(`## 1. ${m.title}`);
    parts.push(
      `Real coordinator process + simulated agents (benchmark load generator) with a fixed per-node upgrade time T = ${st.T_ms} ms; maxUnavailable = f, stabilization 0; every timing scaled by ${st.scale} (coordinator heartbeat ${st.coordinator.heartbeatMs} ms, tick ${st.coordinator.tickMs} ms; serial script: ${st.serial.pollMs} ms sync polls, ${st.serial.stabilizationMs} ms stabilization). Target: ${st.target}.`,
    );
    parts.push(
      table(
        ['n', 'f', 'waves', 'ideal', 'ours', 'ours / ideal', 'mean gap between waves', 'seed serial', 'serial / ours'],
        m.rows.map((x) => [
          x.n,
          x.f,
          x.waves,
          s(x.idealMs),
          s(x.makespanMs),
          `**${x.ratio}**`,
          v(x.meanInterWaveGapMs, ' ms'),
          s(x.serialMs),
          x.serialOverOurs == null ? '–' : `**${x.serialOverOurs}×**`,
        ]),
      ),
    );
    if (m.weightedRows?.length) {
      const w = st.weighted;
      parts.push(
        `Weighted validators on a chain (views of ${w.viewMs} ms, leader of view v = v mod k, a node back only once it produced a block in its own leader view). Weights: ${w.weights}. Ideal: ${w.ideal}. Lower bound: ${w.lowerBound}. maxUnavailable ${w.maxUnavailable}.`,
      );
      parts.push(
        table(
          [
            'n',
            'seed',
            'weight total / slack',
            'heaviest',
            'waves (optimal or FFD)',
            'lower bound',
            'FFD',
            'ours: dispatch groups',
            'leader rotation',
            'best wave schedule',
            'ours',
            'ours / ideal',
            'ours / lower bound',
            'ours: mean wait from back on chain to next dispatch',
          ],
          m.weightedRows.map((x) => [
            x.n,
            x.seed,
            `${x.totalWeight} / ${x.slack}`,
            x.heaviest,
            `${x.optimalWaves}${x.exact ? ' (optimal)' : ''}`,
            x.lowerBoundWaves,
            x.ffdWaves,
            x.measuredWaves,
            s(x.rotationMs),
            s(x.idealMs),
            s(x.makespanMs),
            `**${x.ratio}**`,
            x.overLowerBound,
            v(x.meanWaitAfterBackMs, ' ms'),
          ]),
        ),
      );
    }
  }
  if (r.downtime) {
    parts.push(`## 2. ${r.downtime.title}`);
    parts.push(
      'Real one-validator simulator node, 1.0.0 → 1.0.1 (no migration) both ways. Ours: `guts-upgrade-agent upgrade` (process driver), downtime as the agent measures it; pre-copy = the backup step while the node still runs. Seed: stop, `tar czf` the data dir, swap, start, poll ready. Target: ratio ≤ 0.2.',
    );
    parts.push(
      table(
        ['data', 'ours downtime', 'seed downtime', 'ours / seed', 'seed: tar czf part', 'ours: pre-copy (node up)', 'ours: whole command'],
        r.downtime.rows.map((x) => [
          x.data,
          s(x.oursDowntimeMs),
          s(x.seedDowntimeMs),
          `**${x.ratio}**`,
          s(x.seedTarCzfMs),
          s(x.oursPreCopyMs),
          s(x.oursTotalMs),
        ]),
      ),
    );
    if (r.downtime.restart?.length) {
      parts.push(
        'Against the node’s own restart (the floor for a binary swap), alternating runs on the same node and data: a patch (1.0.0 → 1.0.1) vs a bare stop/start of 1.0.0; a minor (1.0.1 → 1.1.0, migration at start) vs 1.1.0’s first start on the same 1.0.1 data. Medians, each run listed. Target: ≤ 1.1×.',
      );
      const list = (xs) => xs.map((x) => (x / 1000).toFixed(2)).join(', ');
      parts.push(
        table(
          ['data', 'kind', 'bare restart (median)', 'ours (median)', 'ours / bare', 'bare runs (s)', 'ours runs (s)'],
          r.downtime.restart.flatMap((x) =>
            ['patch', 'minor'].map((k) => [x.data, k, s(x[k].bareMedianMs), s(x[k].oursMedianMs), `**${x[k].ratio}**`, list(x[k].bareMs), list(x[k].oursMs)]),
          ),
        ),
      );
    }
  }
  if (r.scale) {
    const c = r.scale;
    parts.push(`## 3. ${c.title}`);
    parts.push(
      `Real coordinator at production settings (heartbeat ${c.settings.heartbeatMs} ms, tick ${c.settings.tickMs} ms, info log to a file, SQLite WAL synchronous=FULL). Simulated upgrade T = ${c.settings.T_ms} ms.`,
    );
    const rows = [];
    if (c.registration) rows.push(['register nodes over the API', `${c.registration.nodes} in ${c.registration.seconds} s (${c.registration.perSec}/s)`]);
    if (c.connect) rows.push(['connect + hello', `${c.connect.seconds} s (${c.connect.perSec}/s), coordinator CPU ${c.connect.coordinatorCpuPct} %`]);
    for (const h of c.heartbeats ?? []) {
      rows.push([
        `heartbeats, ${h.phase}`,
        `${h.heartbeatsPerSec}/s offered and processed (lastSeen age max ${h.lastSeenAgeMaxMs} ms); coordinator CPU ${h.coordinatorCpuPct} %, ${h.cpuMicrosPerHeartbeat} µs CPU/heartbeat → ~${h.estMaxHeartbeatsPerSecOneCore}/s per core; RSS ${h.rssMiB} MiB; API p99 ${h.apiProbe.p99Ms} ms`,
      ]);
    }
    if (c.rollout) {
      const o = c.rollout;
      const sp = (k) => (o.rounds > 1 && o.spread?.[k] ? ` (${o.spread[k][0]}–${o.spread[k][1]})` : '');
      const of = o.rounds > 1 ? `, median of ${o.rounds} rounds (min–max)` : '';
      for (const [i, x] of (o.rounds > 1 ? c.rollouts : []).entries())
        rows.push([
          `round ${i + 1}: rollout to ${x.targetVersion ?? '?'}`,
          `makespan ×${x.ratioToIdeal}; dispatch p50 ${x.dispatchLatencyMs.p50} ms, p99 ${x.dispatchLatencyMs.p99} ms; load generators' loop delay p99 ${x.loadgenLoopLagMs.p99} ms${dispatchShare(x.coordinatorDispatch)}`,
        ]);
      rows.push([
        `rolling rollout, ${o.nodes} nodes, maxUnavailable ${o.maxUnavailable}${of}`,
        `makespan ${s(o.makespanMs)} vs ideal ${s(o.idealMs)} (**×${o.ratioToIdeal}**${sp('ratioToIdeal')})`,
      ]);
      rows.push([
        `command dispatch latency (decision → agent receives)${of}`,
        `p50 ${o.dispatchLatencyMs.p50} ms${sp('p50')}, p90 ${o.dispatchLatencyMs.p90} ms${sp('p90')}, **p99 ${o.dispatchLatencyMs.p99} ms**${sp('p99')}, max ${o.dispatchLatencyMs.max} ms${sp('max')} (${o.commandsReceived} commands per round); load generators' own event-loop delay p99 ${o.loadgenLoopLagMs?.p99 ?? '–'} ms${sp('loadgenLagP99')}, max ${o.loadgenLoopLagMs?.max ?? '–'} ms${sp('loadgenLagMax')}${o.rounds > 1 ? '' : dispatchShare(o.coordinatorDispatch)}`,
      ]);
      rows.push([
        'coordinator during the rollout',
        `CPU ${o.coordinatorCpuPct} %${sp('coordinatorCpuPct')}, RSS max ${o.coordinatorRssMaxMiB} MiB; API /health/live p50 ${o.apiProbe.p50Ms} ms, p99 ${o.apiProbe.p99Ms} ms, max ${o.apiProbe.maxMs} ms`,
      ]);
      rows.push([
        'SQLite writes during the rollout',
        `${o.sqlite.eventsAppended} events (${o.sqlite.eventsPerSec}/s), ${o.sqlite.bytesWrittenMiB} MiB written (${o.sqlite.writeMiBPerSec} MiB/s), ${o.sqlite.writeSyscallsPerSec} write syscalls/s`,
      ]);
    }
    if (c.metricsScrape)
      rows.push([
        `GET /metrics after the rollouts (${c.metricsScrape.scrapes} scrapes)`,
        `median ${c.metricsScrape.medianMs} ms, max ${c.metricsScrape.maxMs} ms, ${c.metricsScrape.kiB} KiB`,
      ]);
    rows.push(['coordinator RSS', `${c.rssIdleBaseMiB} MiB empty → ${c.rssEndMiB} MiB after`]);
    parts.push(table(['measure', 'figure'], rows));
  }
  if (r.footprint) {
    const f = r.footprint;
    parts.push(`## 4. Agent footprint`);
    if (f.runtime) parts.push(`Agent run as: ${f.runtime}.`);
    const rows = [];
    if (f.idle)
      rows.push([
        `idle daemon over ${f.idle.seconds} s`,
        `CPU ${f.idle.cpuPct} % (${f.idle.cpuSec} s), RSS mean ${f.idle.rssMeanMiB} MiB, max ${f.idle.rssMaxMiB} MiB${rssSplit(f.idle)}`,
      ]);
    if (f.bareRuntime)
      rows.push([
        'the same runtime and flags running an empty timer, same seconds (the floor)',
        `CPU ${f.bareRuntime.cpuPct} %, RSS mean ${f.bareRuntime.rssMeanMiB} MiB${rssSplit(f.bareRuntime)}; agent / bare runtime **×${f.rssRatioToBare}**`,
      ]);
    if (f.modulesFloor)
      rows.push([
        'the same runtime holding only ws, node:http and an open better-sqlite3 database (what the idle daemon needs)',
        `CPU ${f.modulesFloor.cpuPct} %, RSS mean ${f.modulesFloor.rssMeanMiB} MiB${rssSplit(f.modulesFloor)}; agent / that floor **×${f.rssRatioToModulesFloor}**`,
      ]);
    for (const p of f.backupPeak?.rows ?? [])
      rows.push([
        `peak RSS of the agent upgrade process, backup of ${p.data}`,
        `**${p.peakRssMiB} MiB** (${(p.peakOverData * 100).toFixed(2)} % of the data size)${p.anonPeakMiB == null ? '' : `; its own (anonymous) memory at most ${p.anonPeakMiB} MiB, sampled every 100 ms`}`,
      ]);
    parts.push(table(['measure', 'figure'], rows));
  }
  if (r.throughput) {
    parts.push(`## 5. ${r.throughput.title}`);
    parts.push(
      'Node stopped (static data). Agent: `BackupStore.createBase` (tar-writer.ts: 1 MiB reads through a fixed ring, full slots written with O_DIRECT where the file system takes it, sha256 on a worker thread as it writes, then fsync). Page cache: the same writer with direct writes off (how it wrote before). GNU: `tar cf` then `sync FILE`. Each contender takes each place in the order in turn; medians, and the spread of the per-round ratio. CPU: user + system seconds per GiB of data (the agent: its whole process; tar: tar and sync).',
    );
    parts.push(
      table(
        ['data', 'agent', 'GNU tar cf + fsync', 'agent / tar', 'page cache', 'page cache / tar'],
        r.throughput.rows.map((x) => [
          x.data,
          `${x.agentMBps} MB/s (${s(x.agentMs)}), ${x.agentCpuSecPerGiB ?? '?'} CPU s/GiB`,
          `${x.tarMBps} MB/s (${s(x.tarMs)}; ${s(x.tarMsWithoutFsync)} without fsync), ${x.tarCpuSecPerGiB ?? '?'} CPU s/GiB`,
          `**${x.ratio}**${x.rounds > 1 ? ` (${x.ratioMin}–${x.ratioMax}, ${x.rounds} rounds)` : ''}`,
          x.cachedMBps === undefined ? '–' : `${x.cachedMBps} MB/s, ${x.cachedCpuSecPerGiB} CPU s/GiB`,
          x.cachedRatio ?? '–',
        ]),
      ),
    );
  }
  if (r.warmup) {
    const w = r.warmup;
    parts.push(`## 6. ${w.title}`);
    parts.push(
      `${w.settings.network}; median of ${w.rows[0]?.rounds ?? 0} round(s) per profile, interleaved. Downtime: the agent's stop → ready. Verify: the agent's verify step, whose checks wait for the node (consensus out of Starting, peers when reported, height advancing past its value at the start of a ${w.settings.checks.advanceWindowMs} ms window). Chain gap: the longest time without a finalized block on the other validators during the upgrade (block interval ${w.settings.timings.block_interval_ms} ms).`,
    );
    parts.push(
      table(
        [
          'profile',
          'downtime',
          'verify',
          'verify / instant',
          'whole command',
          'consensus waited',
          'peers waited (seen)',
          'height-advancing waited',
          'chain gap',
        ],
        w.rows.map((x) => [
          `${x.profile}: ${x.what}`,
          s(x.downtimeMs),
          s(x.verifyMs),
          x.verifyOverInstant == null ? '–' : `**${x.verifyOverInstant}×**`,
          s(x.totalMs),
          v(x.consensusWaitMs, ' ms'),
          `${v(x.peersWaitMs, ' ms')} (${v(x.peers)})`,
          v(x.advanceWaitMs, ' ms'),
          v(x.chainMaxGapMs, ' ms'),
        ]),
      ),
    );
  }
  if (r.drivers) {
    const d = r.drivers;
    parts.push(`## 7. ${d.title}`);
    parts.push(
      `One one-validator simulator node with ${d.settings.dataMiB} MiB of data on a ${d.settings.dockerd} dockerd, run in turn by each driver. Upgrade: the agent's \`upgrade\` 1.0.0 → 1.0.1 (a patch, no migration), downtime as the agent measures it (stop → ready). Bare: the same driver's stop and start of 1.0.0, ready polled every 100 ms. ${d.settings.runs} alternating run(s) each; medians (min–max). Agent run as: ${d.settings.runtime}.`,
    );
    const mm = (x) => `${s(x.medianMs)} (${s(x.minMs)}–${s(x.maxMs)})`;
    parts.push(
      table(
        ['driver', 'upgrade downtime', 'bare restart', 'upgrade / bare'],
        d.rows.map((x) => [x.driver, mm(x.upgrade), mm(x.bare), `**${x.ratio}×**`]),
      ),
    );
    const b = d.blueGreen;
    parts.push(
      `Blue-green (a follower in a container behind nginx, upgraded 1.0.0 → 1.0.1): a client loop sent ${b.requests} requests through nginx (${b.requestsPerSec}/s) from ${s(b.beforeSwitchMs)} before the client first saw 1.0.1 to ${s(b.afterSwitchMs)} after: **${b.failed} failed**. Switch (upstream rewrite + reload until the front served 1.0.1): ${v(b.switchMs, ' ms')}; overlap (1.0.0 still answering after the first 1.0.1 answer): ${v(b.overlapMs, ' ms')}.${b.downtimeMs == null ? '' : ` Downtime as the agent reports it: ${b.downtimeMs} ms.`}`,
    );
  }
  if (Object.keys(out.errors).length) {
    parts.push('## Errors');
    for (const [k, e] of Object.entries(out.errors)) parts.push(`- ${k}: \`${String(e).split('\n')[0]}\``);
  }
  return `${parts.join('\n\n')}\n`;
}

export { fmtBytes };

/** The coordinator's own share of the largest dispatch (its 'commands dispatched' log line). */
function dispatchShare(d) {
  if (!d?.largest) return '';
  const w = d.largest;
  return `; coordinator's share of the largest wave (${w.commands} commands): decide ${w.decideMs} ms, commit ${w.commitMs} ms, hand to sockets ${w.sendMs} ms`;
}

/** An RSS split into the process's own (anonymous) memory and the file pages it maps (the runtime's code). */
function rssSplit(x) {
  return x.anonMeanMiB == null ? '' : ` (own, anonymous ${x.anonMeanMiB} MiB + file-backed ${x.fileMeanMiB} MiB)`;
}
