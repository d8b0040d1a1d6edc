/**
 * BENCHMARK LOAD GENERATOR — not an agent.
 *
 * One child process holding many *simulated agents*: websocket clients that
 * speak the real agent protocol (@guts-upgrade/protocol: hello, heartbeat,
 * ack, progress, result) to the real coordinator, but whose "node" is a few
 * fields in memory and whose "upgrade" is a timer of T ms. They exist so the
 * coordinator can be driven with up to thousands of nodes on a 2-core box; the
 * real agent pipeline is measured separately (downtime, footprint, throughput).
 *
 * Behaviour mirrors the real agent's connection (packages/agent/src/connection.ts):
 * status goes out only in hello and on the heartbeat timer the coordinator sets
 * in welcome, and once more right behind each result; a command is validated,
 * acknowledged, reports progress per pipeline step and ends with one result
 * message. Upgrade timeline (fractions of T): preflight 0, fetch .05, backup .1,
 * stop .4 (node down), install .45, migrate .5, start .55, ready+verify .7 (node
 * up on the new version), commit .95, result at T.
 *
 * Driven by the bench over IPC (see forkLoadgen in common.js).
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import WebSocket from 'ws';
import { agentMessage, decodeCoordinatorMessage, encode } from '@guts-upgrade/protocol';
import { chainClock } from './chain-clock.js';

const STEPS = [
  ['preflight', 0],
  ['fetch', 0.05],
  ['backup', 0.1],
  ['stop', 0.4],
  ['install', 0.45],
  ['migrate', 0.5],
  ['start', 0.55],
  ['verify', 0.7],
  ['commit', 0.95],
];

let cfg = null;
/**
 * This process's own event-loop delay: a command's receipt time is taken in a
 * handler that waits its turn here, so on shared cores part of a dispatch
 * latency is this lag, reported beside it.
 */
const loopLag = monitorEventLoopDelay({ resolution: 5 });
loopLag.enable();
const nodes = new Map();
const stats = { latencies: [], commands: [], heartbeats: 0, results: 0, progress: 0, disconnects: 0, refused: 0 };

const iso = (t = Date.now()) => new Date(t).toISOString();
const height = () => (chain ? chain.height : Math.floor(((Date.now() - cfg.genesis) * cfg.heightRate) / 1000));

/**
 * Weighted mode (init with `chain`): a chain played on the shared clock
 * (chain-clock.js). At each view start the view's leader produces a block if
 * it is up and the weight up reaches the quorum; every node that is up reports
 * the validator set and the last blocks, as a real agent relays
 * /api/consensus/validators and /api/consensus/blocks. The coordinator then
 * counts slack in weight and takes a node back only once it produced a block
 * in a leader view of its own, so the rollout pays the same wait as on a real
 * chain. One process holds the whole set (who is up must be known to all).
 */
let chain = null;

function startChain(c) {
  const clock = chainClock({ genesis: cfg.genesis, viewMs: c.viewMs, validators: c.validators });
  const totalWeight = c.validators.reduce((s, v) => s + v.weight, 0);
  chain = {
    clock,
    height: 0,
    blocks: [],
    set: {
      epoch: 0,
      totalWeight,
      quorumWeight: Math.floor((2 * totalWeight + 2) / 3),
      validators: c.validators.map((v) => ({ name: v.name, pubkey: v.pubkey, weight: v.weight, active: true })),
    },
    timer: null,
  };
  const tick = () => {
    const v = clock.viewAt(Date.now());
    const leader = clock.leaderOf(v);
    const upWeight = c.validators.reduce((s, x) => s + (nodes.get(x.nodeId)?.up ? x.weight : 0), 0);
    if (nodes.get(leader.nodeId)?.up && upWeight >= chain.set.quorumWeight) {
      chain.height++;
      chain.blocks.push({ height: chain.height, blockId: `b${chain.height}`, view: v, producer: leader.pubkey, signatureCount: null });
      if (chain.blocks.length > 64) chain.blocks.shift();
    }
    chain.timer = setTimeout(tick, Math.max(1, clock.viewStart(v + 1) - Date.now()));
  };
  chain.timer = setTimeout(tick, Math.max(1, clock.viewStart(clock.viewAt(Date.now()) + 1) - Date.now()));
}

function chainStatus(node) {
  const v = chain.clock.viewAt(Date.now());
  const leader = chain.clock.leaderOf(v);
  return {
    isLeader: node.up && leader.nodeId === node.id,
    currentLeader: node.up ? leader.pubkey : null,
    view: node.up ? v : null,
    ...(node.up ? { chain: { validators: chain.set, blocks: chain.blocks.slice(-32) } } : {}),
  };
}

function status(node) {
  return {
    nodeVersion: node.version,
    health: node.up ? 'up' : 'down',
    ready: node.up,
    isLeader: node.up && node.id === cfg.leader,
    currentLeader: cfg.leader,
    finalizedHeight: node.up ? height() : node.frozenHeight,
    view: 1,
    peerCount: cfg.n - 1,
    busy: node.busy,
    ...(chain ? chainStatus(node) : {}),
  };
}

function send(node, m) {
  if (node.ws && node.ws.readyState === WebSocket.OPEN && node.welcomed) node.ws.send(encode(m));
}

function beat(node) {
  send(node, agentMessage('heartbeat', { nodeId: node.id, seq: node.seq++, status: status(node) }));
  stats.heartbeats++;
}

/** The simulated upgrade: progress per step, down between stop and ready, result after T. */
function simulateUpgrade(node, commandId, kind, toVersion, report) {
  const T = cfg.T;
  const t0 = Date.now();
  const startedAt = iso(t0);
  const fromVersion = node.version;
  let stoppedAt = null;
  let stoppedAtView = null;
  let readyAt = null;
  node.busy = { commandId, kind, step: null };
  return new Promise((resolve) => {
    STEPS.forEach(([step, frac], i) => {
      setTimeout(() => {
        if (i > 0) report?.(agentMessage('progress', { commandId, step: STEPS[i - 1][0], state: 'done', at: iso() }));
        node.busy = { commandId, kind, step };
        if (step === 'stop') {
          stoppedAt = Date.now();
          stoppedAtView = chain ? chain.clock.viewAt(stoppedAt) : null;
          node.frozenHeight = height();
          node.up = false;
        }
        if (step === 'verify') {
          readyAt = Date.now();
          node.version = toVersion;
          node.up = true;
        }
        report?.(agentMessage('progress', { commandId, step, state: 'started', at: iso() }));
      }, frac * T);
    });
    setTimeout(() => {
      report?.(agentMessage('progress', { commandId, step: 'commit', state: 'done', at: iso() }));
      const result = agentMessage('result', {
        commandId,
        kind,
        outcome: 'succeeded',
        fromVersion,
        toVersion,
        runningVersion: node.version,
        migration: 'none',
        downtimeMs: readyAt - stoppedAt,
        ...(stoppedAtView != null ? { stoppedAtView } : {}),
        evidence: { checks: [{ name: 'bench-simulated', ok: true }] },
        startedAt,
        finishedAt: iso(),
      });
      node.busy = null;
      resolve(result);
    }, T);
  });
}

function onCommand(node, raw) {
  const recvAt = Date.now();
  const d = decodeCoordinatorMessage(raw);
  if (!d.ok) return;
  const m = d.message;
  if (m.type === 'welcome') {
    node.welcomed = true;
    clearInterval(node.hb);
    // The real agent starts its interval at welcome; agents connect at different moments, so phases spread.
    node.hb = setInterval(() => beat(node), m.heartbeatIntervalMs);
    node.onWelcome?.();
    return;
  }
  if (m.type === 'refused') {
    stats.refused++;
    node.onWelcome?.(new Error(`refused: ${m.code} ${m.message}`));
    return;
  }
  if (m.type !== 'command') return;
  const issued = Date.parse(m.issuedAt);
  stats.latencies.push(recvAt - issued);
  const rec = { id: node.id, commandId: m.id, issuedAt: issued, recvAt, resultAt: null };
  stats.commands.push(rec);
  if (node.busy) {
    send(
      node,
      agentMessage('ack', {
        commandId: m.id,
        status: node.busy.commandId === m.id ? 'duplicate' : 'rejected',
        ...(node.busy.commandId === m.id ? {} : { code: 'E_BUSY', message: 'busy' }),
      }),
    );
    return;
  }
  send(node, agentMessage('ack', { commandId: m.id, status: 'accepted' }));
  const to = m.kind === 'rollback' ? (m.toVersion ?? node.version) : m.target.version;
  void simulateUpgrade(node, m.id, m.kind, to, (p) => {
    stats.progress++;
    send(node, p);
  }).then((result) => {
    rec.resultAt = Date.now();
    stats.results++;
    send(node, result);
    // As the real agent does: the coordinator sees the node healthy on its new
    // version now rather than up to one heartbeat interval later.
    beat(node);
  });
}

function connect(node) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${cfg.url}/agent`, {
      headers: { authorization: `Bearer ${node.token}`, 'x-guts-node-id': node.id },
      handshakeTimeout: 30_000,
      maxPayload: 1024 * 1024,
    });
    node.ws = ws;
    node.welcomed = false;
    let settled = false;
    node.onWelcome = (err) => {
      if (settled) return;
      settled = true;
      if (err) reject(err);
      else resolve();
    };
    ws.on('open', () => ws.send(encode(agentMessage('hello', { nodeId: node.id, agentVersion: 'bench-loadgen', status: status(node), recentResults: [] }))));
    ws.on('message', (raw) => onCommand(node, raw));
    ws.on('error', (err) => {
      if (!settled) {
        settled = true;
        reject(err);
      }
    });
    ws.on('close', () => {
      clearInterval(node.hb);
      node.welcomed = false;
      if (!node.closing) stats.disconnects++;
      if (!settled) {
        settled = true;
        reject(new Error('closed before welcome'));
      }
    });
  });
}

async function init(m) {
  cfg = { url: m.url, leader: m.leader, T: m.T, genesis: m.genesis, heightRate: m.heightRate ?? 2, n: m.n };
  for (const { id, token } of m.nodes) {
    nodes.set(id, { id, token, version: m.version, up: true, busy: null, frozenHeight: null, seq: 0, ws: null, welcomed: false, hb: null, closing: false });
  }
  if (m.chain) startChain(m.chain);
  if (!cfg.url) return { connected: 0 };
  // A bounded number of handshakes in flight, like agents starting over a few seconds.
  const list = [...nodes.values()];
  let i = 0;
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: m.concurrency ?? 25 }, async () => {
      while (i < list.length) {
        const node = list[i++];
        for (let attempt = 0; ; attempt++) {
          try {
            await connect(node);
            break;
          } catch (err) {
            if (attempt >= 5) throw err;
            await new Promise((r) => setTimeout(r, 200 * (attempt + 1)));
          }
        }
      }
    }),
  );
  return { connected: list.length, connectMs: Date.now() - t0 };
}

async function handle(m) {
  switch (m.op) {
    case 'init':
      return init(m);
    case 'stats': {
      const ms = (ns) => Math.round(ns / 1e5) / 10;
      const out = {
        ...stats,
        welcomed: [...nodes.values()].filter((n) => n.welcomed).length,
        loopLagMs: { p50: ms(loopLag.percentile(50)), p99: ms(loopLag.percentile(99)), max: ms(loopLag.max) },
      };
      if (m.reset) {
        loopLag.reset();
        stats.latencies = [];
        stats.commands = [];
        stats.heartbeats = 0;
        stats.results = 0;
        stats.progress = 0;
      }
      return out;
    }
    case 'heartbeatOverride': {
      // Stress only: beat faster than the coordinator asked, to find what it can process.
      for (const n of nodes.values()) {
        if (!n.welcomed) continue;
        clearInterval(n.hb);
        const start = () => {
          n.hb = setInterval(() => beat(n), m.intervalMs);
        };
        setTimeout(start, Math.random() * m.intervalMs);
      }
      return { ok: true };
    }
    case 'upgradeDirect': {
      // The serial script's "ssh host upgrade": runs the same simulated upgrade, no coordinator.
      const node = nodes.get(m.id);
      const result = await simulateUpgrade(node, m.commandId, 'upgrade', m.version, null);
      return { result };
    }
    case 'status':
      return { status: status(nodes.get(m.id)), height: height() };
    case 'close':
      clearTimeout(chain?.timer);
      for (const n of nodes.values()) {
        n.closing = true;
        clearInterval(n.hb);
        n.ws?.close(1001, 'bench done');
      }
      return { closed: true };
    default:
      throw new Error(`unknown op ${m.op}`);
  }
}

process.on('message', (m) => {
  handle(m).then(
    (r) => process.send({ reqId: m.reqId, ...r }),
    (err) => process.send({ reqId: m.reqId, error: err.message }),
  );
});
process.on('disconnect', () => process.exit(0));
