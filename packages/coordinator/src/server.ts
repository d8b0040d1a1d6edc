/**
 * Wires the coordinator: SQLite store, engine, HTTP API and the agent
 * websocket endpoint on one server (TCP, TLS when configured), plus an
 * optional unix socket listener serving the same handler.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { existsSync, rmSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import { WebSocketServer } from 'ws';
import { MAX_FRAME_BYTES } from '@guts-upgrade/protocol';
import { buildApi } from './api/app.js';
import type { Config } from './config.js';
import { Store } from './db.js';
import { Coordinator } from './engine/coordinator.js';
import { Metrics } from './metrics.js';

export interface RunningCoordinator {
  coordinator: Coordinator;
  app: FastifyInstance;
  store: Store;
  /** TCP port actually bound (null when only a socket is configured). */
  port: number | null;
  url: string | null;
  socket: string | null;
  close(): Promise<void>;
}

export async function startCoordinator(config: Config, opts: { log?: Logger; now?: () => number } = {}): Promise<RunningCoordinator> {
  const log = opts.log ?? pino({ level: config.logLevel, base: { component: 'coordinator' } });
  const store = new Store(config.db);
  const coordinator = new Coordinator(config, store, log, opts.now);
  const metrics = new Metrics(coordinator);
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES });
  wss.on('connection', (ws, req: IncomingMessage) => coordinator.hub.handleAgent(ws, req));
  const servers: Server[] = [];
  let handler: ((req: IncomingMessage, res: ServerResponse) => void) | null = null;
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/agent') {
      socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  };
  let closing = false;
  const app = await buildApi({
    services: coordinator,
    metrics,
    log,
    ready: () => !closing,
    limit: config.limits.api,
    serverFactory: (h) => {
      handler = h;
      const s = config.tls ? createHttpsServer({ cert: config.tls.cert, key: config.tls.key }, h) : createServer(h);
      s.on('upgrade', onUpgrade);
      servers.push(s);
      return s as Server;
    },
  });
  await app.ready();
  const main = servers[0]!;
  let port: number | null = null;
  if (config.listen.port !== null) {
    await new Promise<void>((resolve, reject) => {
      main.once('error', reject);
      main.listen(config.listen.port!, config.listen.host, () => resolve());
    });
    const addr = main.address();
    port = typeof addr === 'object' && addr ? addr.port : null;
  }
  let unix: Server | null = null;
  if (config.listen.socket) {
    if (existsSync(config.listen.socket)) rmSync(config.listen.socket, { force: true });
    unix = createServer(handler!);
    unix.on('upgrade', onUpgrade);
    await new Promise<void>((resolve, reject) => {
      unix!.once('error', reject);
      unix!.listen(config.listen.socket!, () => resolve());
    });
  }
  coordinator.start();
  const scheme = config.tls ? 'https' : 'http';
  const url = port !== null ? `${scheme}://${config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host}:${port}` : null;
  log.info({ url, socket: config.listen.socket, db: config.db, schema: store.schemaVersion() }, 'coordinator listening');
  return {
    coordinator,
    app,
    store,
    port,
    url,
    socket: config.listen.socket,
    async close() {
      closing = true;
      await coordinator.stop();
      for (const c of wss.clients) c.terminate();
      wss.close();
      const closeServer = (s: Server) =>
        new Promise<void>((resolve) => {
          if (!s.listening) return resolve();
          s.close(() => resolve());
          s.closeAllConnections?.();
        });
      if (port !== null) await closeServer(main);
      if (unix) await closeServer(unix);
      await app.close().catch(() => undefined);
      store.close();
    },
  };
}
