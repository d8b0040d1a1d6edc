/** The running node: start-up sequence, schema checks, HTTP API, metrics, faults. */
import crypto from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { activeWeight, quorumWeightFor } from '@guts-upgrade/protocol/chain';
import { parseAddr, type NodeConfig, type P2pReport } from './config.js';
import { Consensus } from './consensus.js';
import { EpochError, epochFileFor, EpochStore } from './epoch.js';
import { HealthState } from './health.js';
import { HistoryWriter } from './history.js';
import type { Logger } from './log.js';
import { Metrics } from './metrics.js';
import { type Block, ChainStore, corruptDataDir, initDataDir, readSchema, type SchemaInfo, StorageError, writeSchema } from './storage.js';
import { type BuildIdentity, parseVersion, runtimeVersion, schemaForVersion, schemaMajor } from './version.js';

/** Exit code when the data dir's schema forbids starting (major gap, newer data, corrupt schema). */
export const EXIT_SCHEMA = 2;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function send(res: http.ServerResponse, code: number, body: unknown): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(code, { 'content-type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json' });
  res.end(text);
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > 1 << 20) throw new Error('body too large');
    chunks.push(c as Buffer);
  }
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || 'null');
}

function listen(server: net.Server, addr: string): Promise<void> {
  const { host, port } = parseAddr(addr);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/**
 * Checks the data dir against this binary's schema. Returns the migration to
 * run at start-up (same major, older minor), or exits with EXIT_SCHEMA.
 */
function checkSchema(cfg: NodeConfig, version: string, log: Logger): { from: number; to: number } | null {
  const want = schemaForVersion(version);
  let info: SchemaInfo | null;
  try {
    info = readSchema(cfg.dataDir);
  } catch (e) {
    log.error('storage is corrupt, refusing to start', { error: (e as Error).message, data_dir: cfg.dataDir });
    process.exit(EXIT_SCHEMA);
  }
  if (!info) {
    initDataDir(cfg.dataDir, { version });
    log.info('initialized new data dir', { data_dir: cfg.dataDir, schema: want });
    return null;
  }
  const have = info.schema;
  if (have === want) return null;
  if (have > want) {
    log.error('storage schema is newer than this binary, refusing to start (restore the backup taken before the upgrade, or run the newer binary)', {
      data_schema: have,
      binary_schema: want,
      data_version: info.version,
      version,
    });
    process.exit(EXIT_SCHEMA);
  }
  if (schemaMajor(have) < schemaMajor(want)) {
    log.error(
      `storage schema ${have} is from major ${schemaMajor(have)}; run \`guts-node migrate --from ${info.version} --to ${version} --data-dir ${cfg.dataDir}\` first`,
      { data_schema: have, binary_schema: want, data_version: info.version, version },
    );
    process.exit(EXIT_SCHEMA);
  }
  return { from: have, to: want };
}

export async function runNode(cfg: NodeConfig, id: BuildIdentity, log: Logger): Promise<void> {
  const version = runtimeVersion(id);
  parseVersion(version);
  const fault = id.fault ?? 'none';
  log.setup(cfg.logLevel, cfg.logFormat, { node: cfg.name });
  log.info('starting guts-node', {
    version,
    api_addr: cfg.apiAddr,
    p2p_addr: cfg.p2pAddr,
    metrics_addr: cfg.metricsAddr,
    data_dir: cfg.dataDir,
    validators: cfg.validators.length,
    role: cfg.role,
    pid: process.pid,
  });

  const migration = checkSchema(cfg, version, log);

  let consensus: Consensus | null = null;
  const epochs = new EpochStore(cfg.validators, epochFileFor(cfg.dataDir), (e) => log.warn('cannot keep the epoch', { error: e.message }));
  const p2pReport = fault === 'isolated' ? 'isolated' : cfg.sim.p2p_report;
  const sim = { ...cfg.sim, p2p_report: p2pReport };
  // A lone validator is connected to everything there is; a follower is never alone: it follows someone.
  const health = new HealthState(() => p2pHealth(p2pReport, consensus, cfg.role === 'follower' ? 0 : cfg.validators.length));
  const metrics = new Metrics(() => ({
    guts_build_info: { help: 'Build information of the running binary.', value: 1, labels: { version, schema: schemaForVersion(version) } },
    guts_consensus_finalized_height: { help: 'Latest finalized block height.', value: consensus?.height ?? 0 },
    guts_consensus_view: { help: 'Current consensus view.', value: consensus?.view ?? 0 },
    guts_consensus_is_leader: {
      help: 'Whether this node leads the current view.',
      value: consensus && health.ready && consensus.leader?.name === cfg.name ? 1 : 0,
    },
    // The real node never sets this gauge (it reads 0) unless it reports p2p.
    guts_p2p_peers_connected: { help: 'Number of connected P2P peers.', value: p2pReport === 'unknown' ? 0 : (consensus?.peerCount ?? 0) },
    guts_storage_up: { help: 'Whether storage is healthy.', value: health.storageHealthy ? 1 : 0 },
    guts_node_ready: { help: 'Whether the node is ready.', value: health.ready ? 1 : 0 },
  }));

  const blockView = (b: Block) => ({
    height: b.height,
    block_id: b.block_id,
    parent_id: b.parent_id,
    producer: b.producer,
    timestamp: b.timestamp,
    tx_count: b.tx_count,
    tx_root: b.tx_root,
    state_root: b.state_root,
    view: b.view,
    signature_count: b.signature_count,
  });

  let degraded = false;
  const route = async (req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<number> => {
    const p = url.pathname;
    if (degraded && p.startsWith('/api/')) await sleep(cfg.sim.degrade_latency_ms);
    const reply = (code: number, body: unknown) => {
      send(res, code, body);
      return code;
    };
    // A peer whose connection has not formed (or any peer, for a node that connects to nobody) gets no answer;
    // a follower (a name outside the set) may read, never propose or commit.
    const peer = req.headers['x-guts-peer'];
    if (p.startsWith('/p2p/') && typeof peer === 'string' && !consensus?.answers(peer, req.method === 'GET')) return reply(503, 'not connected');
    const r = (x: { code: number; body: unknown }) => reply(x.code, x.body);
    if (req.method === 'GET') {
      switch (p) {
        case '/health':
          return r(health.health(version));
        case '/health/live':
          return r(health.live());
        case '/health/ready':
          return r(health.readiness());
        case '/health/startup':
          return r(health.startup());
        case '/api/consensus/status': {
          const c = consensus;
          const leader = c && health.startupComplete ? c.leader : null;
          return reply(200, {
            enabled: true,
            state: c ? c.state : 'Starting',
            view: c?.view ?? 0,
            finalized_height: c?.height ?? 0,
            current_leader: leader?.pubkey ?? null,
            is_leader: !!leader && leader.name === cfg.name && health.ready,
            pending_transactions: c?.pendingTransactions ?? 0,
          });
        }
        case '/api/consensus/validators': {
          // total_weight is the active validators' weight, the one the quorum is taken of.
          const set = epochs.chainValidators();
          const total = activeWeight(set);
          return reply(200, {
            epoch: epochs.current.epoch,
            total_weight: total,
            quorum_weight: quorumWeightFor(total),
            validator_count: set.length,
            validators: set.map((v, i) => ({ name: v.name, pubkey: v.pubkey, weight: v.weight, addr: cfg.validators[i]!.addr, active: v.active })),
          });
        }
        case '/api/consensus/blocks': {
          const c = consensus;
          if (!c) return reply(200, []);
          return reply(200, c.blocksFrom(Math.max(1, c.height - 9), 10).map(blockView));
        }
        case '/api/consensus/mempool':
          return reply(200, { transaction_count: consensus?.pendingTransactions ?? 0, oldest_age_secs: 0, average_propose_count: 0 });
        case '/p2p/status':
          return consensus ? reply(200, consensus.myStatus()) : reply(503, 'starting');
        case '/p2p/blocks': {
          if (!consensus || !health.storageHealthy) return reply(503, 'unavailable');
          const from = Number(url.searchParams.get('from') ?? '1');
          const limit = Math.min(1000, Number(url.searchParams.get('limit') ?? '100'));
          return reply(200, consensus.blocksFrom(from, limit));
        }
      }
      const m = /^\/api\/consensus\/blocks\/(\d+)$/.exec(p);
      if (m) {
        const b = consensus?.chain.get(Number(m[1]));
        return b ? reply(200, blockView(b)) : reply(404, `Block at height ${m[1]} not found`);
      }
    } else if (req.method === 'POST') {
      if (p === '/sim/epoch') {
        // Simulator control (not in the real node): change the validator set's weights from now on.
        try {
          const changed = epochs.set(await readJson(req));
          if (changed) log.info('epoch changed', { epoch: epochs.current.epoch, weights: epochs.current.weights, active: epochs.current.active });
          return reply(200, { ...epochs.current, changed });
        } catch (e) {
          if (e instanceof EpochError) return reply(e.status, { error: e.message });
          throw e;
        }
      }
      if (p === '/api/consensus/transactions') {
        await readJson(req);
        if (consensus) consensus.pendingTransactions++;
        return reply(202, { transaction_id: crypto.randomBytes(32).toString('hex'), accepted: true });
      }
      if (p === '/p2p/propose' || p === '/p2p/commit') {
        const b = (await readJson(req)) as Block;
        if (!consensus || !health.storageHealthy) return reply(503, 'unavailable');
        if (p === '/p2p/propose') return reply(200, { ack: await consensus.onPropose(b) });
        consensus.onCommit(b);
        return reply(200, { ok: true });
      }
    }
    return reply(404, 'not found');
  };

  const api = http.createServer((req, res) => {
    const t0 = process.hrtime.bigint();
    const url = new URL(req.url ?? '/', 'http://x');
    route(req, res, url)
      .then((code) => {
        if (!url.pathname.startsWith('/p2p/')) metrics.recordHttp(req.method ?? 'GET', url.pathname, code, Number(process.hrtime.bigint() - t0) / 1e9);
      })
      .catch((e: Error) => {
        if (!res.headersSent) send(res, 400, { error: e.message });
        else res.destroy();
      });
  });
  api.keepAliveTimeout = 2000;
  const metricsServer = http.createServer((req, res) => {
    const p = new URL(req.url ?? '/', 'http://x').pathname;
    if (p === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
      res.end(metrics.render());
    } else send(res, 404, 'not found');
  });
  // Real p2p is a libp2p-style transport; here the port is only held so conflicts show up like on a real host.
  const p2pServer = net.createServer((s) => s.destroy());

  try {
    await listen(api, cfg.apiAddr);
    await listen(metricsServer, cfg.metricsAddr);
    await listen(p2pServer, cfg.p2pAddr);
  } catch (e) {
    log.error('failed to bind', { error: (e as Error).message });
    process.exit(1);
  }
  log.info('api listening', { api_addr: cfg.apiAddr, metrics_addr: cfg.metricsAddr, p2p_addr: cfg.p2pAddr });

  let shuttingDown = false;
  const shutdown = (sig: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info('shutting down', { signal: sig });
    consensus?.stop();
    api.closeAllConnections();
    for (const s of [api, metricsServer, p2pServer]) s.close();
    setTimeout(() => process.exit(0), 50).unref();
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));

  if (fault === 'exits') {
    setTimeout(() => {
      log.error('fatal: panicked during start-up (simulated bad build)', { version, fault });
      process.exit(1);
    }, cfg.sim.fault_delay_ms);
  }

  let delay = cfg.sim.startup_delay_ms;
  if (cfg.sim.slow_start_chance > 0 && Math.random() < cfg.sim.slow_start_chance) {
    delay += cfg.sim.slow_start_ms;
    log.warn('slow start', { extra_ms: cfg.sim.slow_start_ms });
  }
  health.storageReason = 'opening storage';
  await sleep(delay);

  if (migration) {
    log.info('migrating storage schema', { from: migration.from, to: migration.to });
    await sleep(cfg.sim.migrate_ms);
    writeSchema(cfg.dataDir, migration.to, version, migration.from);
    log.info('storage schema migrated', { from: migration.from, to: migration.to });
  }

  if (cfg.sim.storage_open_ms > 0) {
    log.info('opening storage', { data_dir: cfg.dataDir });
    await sleep(cfg.sim.storage_open_ms);
  }
  const history = new HistoryWriter(cfg.historyFile, (e) => log.warn('cannot write height history', { file: cfg.historyFile, error: e.message }));
  const chain = new ChainStore(cfg.dataDir);
  health.storageHealthy = true;
  health.storageReason = null;
  health.realtimeHealthy = true;
  const engine = new Consensus({ ...cfg, sim }, chain, log, history, () => health.ready && health.storageHealthy, version, epochs);
  consensus = engine;
  // The engine reports `Starting` (and takes no part) for consensus_start_ms after readiness.
  if (cfg.sim.consensus_start_ms > 0) {
    setTimeout(() => {
      engine.start();
      log.info('consensus engine started', { p2p_warmup_ms: sim.p2p_warmup_ms, p2p_report: p2pReport });
    }, cfg.sim.consensus_start_ms);
  } else engine.start();
  health.startupComplete = true;
  health.startupDurationMs = Date.now() - health.startTime;
  if (fault === 'never-ready') {
    log.warn('waiting for subsystems', { version });
  } else {
    health.ready = true;
    log.info('node ready', { version, finalized_height: chain.height, startup_duration_ms: health.startupDurationMs });
  }

  // Storage health follows the schema file, so an outside corruption is noticed too.
  setInterval(() => {
    try {
      const s = readSchema(cfg.dataDir);
      if (!s) throw new StorageError('schema.json is missing');
      if (!health.storageHealthy) return;
    } catch (e) {
      if (health.storageHealthy) log.error('storage check failed', { error: (e as Error).message });
      health.storageHealthy = false;
      health.storageReason = (e as Error).message;
    }
  }, 1000).unref();

  if (fault === 'degrades') {
    setTimeout(() => {
      degraded = true;
      log.warn('request handling degraded (simulated regression)', { version, added_latency_ms: cfg.sim.degrade_latency_ms });
    }, cfg.sim.degrade_after_ms).unref();
  }

  if (fault === 'corrupts') {
    setTimeout(() => {
      corruptDataDir(cfg.dataDir);
      health.storageHealthy = false;
      health.storageReason = 'data corruption detected';
      log.error('storage corruption detected', { data_dir: cfg.dataDir });
    }, cfg.sim.fault_delay_ms);
  }
}

/** The p2p component of /health for the configured reporting shape (see P2pReport). */
function p2pHealth(report: P2pReport, consensus: Consensus | null, validators: number): { connected: boolean; count: number } {
  if (report === 'unknown') return { connected: false, count: 0 };
  if (report === 'isolated') return { connected: true, count: 0 };
  const count = consensus?.peerCount ?? 0;
  return { connected: count > 0 || (validators === 1 && !!consensus?.started), count };
}
