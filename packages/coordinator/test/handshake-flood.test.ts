/**
 * Finding: every refused websocket handshake wrote an audit row holding the
 * caller's uncapped node-id header (2,000 attempts with 4 KiB headers: +11 MB
 * of database, +2,000 warn lines). Now a refused handshake is a metric and at
 * most a log line per interval, never a row, and nothing the caller sent is
 * kept. A real coordinator (SQLite file, loopback port), real ws clients.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import Database from 'better-sqlite3';
import { pino } from 'pino';
import t from 'tap';
import WebSocket from 'ws';
import { api, type NodeListBody, type NodeRegisteredBody } from '../src/client.js';
import { buildConfig } from '../src/config.js';
import { startCoordinator } from '../src/server.js';

const OP = 'operator-token-0123456789';
const ATTEMPTS = 2000;
/** 4 KiB node-id headers, as in the finding; the marker shows whether one was kept anywhere. */
const MARKER = 'ATTACKERHEADER';
const HUGE = `${MARKER}${'x'.repeat(4096 - MARKER.length)}`;

/** One handshake; resolves with what the coordinator answered and how it closed. */
function handshake(url: string, headers: Record<string, string>): Promise<{ code: string | null; close: number }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${url}/agent`, { headers });
    let code: string | null = null;
    ws.on('message', (raw: Buffer) => {
      code = (JSON.parse(raw.toString()) as { code?: string }).code ?? null;
    });
    ws.on('close', (close) => resolve({ code, close }));
    ws.on('error', () => undefined);
  });
}

t.test(`${ATTEMPTS} unauthenticated handshakes: no audit row, a bounded log, the API still answers`, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'guc-flood-'));
  const db = join(dir, 'c.db');
  const lines: string[] = [];
  const log = pino(
    { level: 'info' },
    new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    }),
  );
  // An interval longer than the test: the log may get the first refusal and the summary at stop, no more.
  const c = await startCoordinator(
    buildConfig({
      listen: { host: '127.0.0.1', port: 0 },
      db,
      operators: [{ name: 'alice', token: OP, role: 'operator' }],
      limits: { refusedLogIntervalMs: '1h' },
    }),
    { log },
  );
  let closed = false;
  const close = async () => {
    if (!closed) await c.close();
    closed = true;
  };
  t.teardown(async () => {
    await close();
    rmSync(dir, { recursive: true, force: true });
  });
  const op = { url: c.url!, token: OP };
  await api<NodeRegisteredBody>(op, 'POST', '/api/v1/nodes', { id: 'v0' });
  const file = new Database(db, { readonly: true, fileMustExist: true });
  const audit = () => file.prepare('SELECT COUNT(*) AS n, COALESCE(MAX(seq), 0) AS last FROM events').get() as { n: number; last: number };
  const before = audit();
  t.equal(before.n, 1, 'the registration is recorded');

  const wsUrl = c.url!.replace('http', 'ws');
  // Most carry a 4 KiB id, some a well-formed unknown id, some the real node's id with a wrong
  // token, some nothing: every reason a stranger can be refused for.
  const kinds: { reason: string; headers: Record<string, string> }[] = [
    { reason: 'unknown_node', headers: { authorization: 'Bearer gua_guess', 'x-guts-node-id': HUGE } },
    { reason: 'unknown_node', headers: { authorization: 'Bearer gua_guess', 'x-guts-node-id': `${MARKER.toLowerCase()}-1` } },
    { reason: 'bad_token', headers: { authorization: 'Bearer gua_guess', 'x-guts-node-id': 'v0' } },
    { reason: 'no_credentials', headers: { 'x-guts-node-id': HUGE } },
  ];
  const expected = new Map<string, number>();
  const answers = new Map<string, number>();
  const BATCH = 50;
  for (let i = 0; i < ATTEMPTS; i += BATCH) {
    const batch = Array.from({ length: BATCH }, (_, j) => {
      // 85% 4 KiB ids, the rest spread over the other kinds
      const n = i + j;
      const kind = n % 20 < 17 ? kinds[0]! : kinds[1 + (n % 3)]!;
      expected.set(kind.reason, (expected.get(kind.reason) ?? 0) + 1);
      return handshake(wsUrl, kind.headers);
    });
    for (const r of await Promise.all(batch)) answers.set(`${r.code}/${r.close}`, (answers.get(`${r.code}/${r.close}`) ?? 0) + 1);
  }
  t.same(Object.fromEntries(answers), { 'E_AUTH/4000': ATTEMPTS }, 'every handshake refused with E_AUTH, close 4000');

  const after = audit();
  t.same(after, before, 'the audit table is unchanged: no row for any refused handshake');
  t.equal(
    (file.prepare('SELECT COUNT(*) AS n FROM events WHERE data LIKE ? OR actor LIKE ?').get(`%${MARKER}%`, `%${MARKER}%`) as { n: number }).n,
    0,
    'no header stored',
  );
  t.same(
    (await api<NodeListBody>(op, 'GET', '/api/v1/nodes')).nodes.map((n) => n.id),
    ['v0'],
    'the API answers after the flood',
  );
  const metrics = await api<string>({ url: c.url! }, 'GET', '/metrics');
  for (const [reason, n] of expected) {
    t.match(metrics, new RegExp(`^guts_upgrade_handshakes_refused_total\\{reason="${reason}"\\} ${n}$`, 'm'), `${n} refusals counted as ${reason}`);
  }
  t.match(metrics, /^guts_upgrade_handshakes_refused_total\{reason="revoked"\} 0$/m, 'every reason listed from 0');

  file.close();
  await close();
  const refusalLines = lines.filter((l) => l.includes('handshake'));
  t.ok(refusalLines.length >= 1 && refusalLines.length <= 2, `at most the first refusal and one summary logged (${refusalLines.length} lines)`);
  t.same(
    lines.filter((l) => l.toLowerCase().includes(MARKER.toLowerCase())),
    [],
    'no header logged',
  );
  const summary = refusalLines.map((l) => JSON.parse(l) as { refused?: Record<string, number>; nodes?: string[]; reason?: string }).find((l) => l.refused);
  t.same(summary?.nodes, ['v0'], 'the summary names the registered node whose token was wrong');
  t.equal(
    Object.values(summary?.refused ?? {}).reduce((a, b) => a + b, 0),
    ATTEMPTS - 1,
    'and counts every refusal after the first',
  );
});
