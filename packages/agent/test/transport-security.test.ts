// Files and links (the zero-trust issue, item 6): the coordinator link refuses
// cleartext to another host, trusts a private CA only when named, the token has
// one minimum length and a token file open to others is refused; the journal is root's.
import fs from 'node:fs';
import { createServer } from 'node:https';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { WebSocketServer } from 'ws';
import { coordinatorMessage, decodeAgentMessage, encode, type AgentMessage } from '@guts-upgrade/protocol';
import { makeTestTls, waitFor } from '@guts-upgrade/simulator';
import { Agent } from '../src/agent.js';
import { cleartextToRemote, loadConfig, resolveConfig } from '../src/config.js';
import { Connection } from '../src/connection.js';
import { Journal } from '../src/journal.js';
import { createLogger } from '../src/log.js';
import { makeRig } from './helpers.js';

delete process.env.NODE_OPTIONS;

const TOKEN = 'agent-token-0123456789abcdef';

function scratch(t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'guts-sec-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test('ws:// to another host is refused unless allowInsecure; loopback and wss:// pass', async (t) => {
  const base = { nodeId: 'a' };
  t.throws(() => resolveConfig({ ...base, coordinator: { url: 'ws://coord.example:7600', token: TOKEN } }, {}), {
    code: 'E_CONFIG',
    message: /coordinator\.url: ws:\/\/coord\.example:7600 would send the agent's token in clear over the network: use wss:\/\//,
  });
  t.equal(resolveConfig({ ...base, coordinator: { url: 'ws://coord.example:7600', token: TOKEN, allowInsecure: true } }, {}).coordinator.allowInsecure, true);
  t.equal(
    resolveConfig({ ...base, coordinator: { url: 'ws://coord.example:7600', token: TOKEN } }, { GUTS_UPGRADE_COORDINATOR__ALLOW_INSECURE: 'true' }).coordinator
      .allowInsecure,
    true,
    'allowInsecure from the environment',
  );
  t.throws(() => resolveConfig({ ...base, coordinator: { allowInsecure: 'yes' } }, {}), { message: /coordinator\.allowInsecure: must be true or false/ });
  for (const url of ['ws://127.0.0.1:7600', 'ws://localhost:7600', 'ws://[::1]:7600', 'wss://coord.example:7443']) {
    t.equal(resolveConfig({ ...base, coordinator: { url, token: TOKEN } }, {}).coordinator.url, url, url);
  }
  t.same(['ws://10.0.0.1', 'ws://127.0.0.1', 'wss://10.0.0.1', 'ws://[::1]:1'].map(cleartextToRemote), [true, false, false, false]);
});

t.test('one minimum token length; a token file open to others is refused with the chmod to run', async (t) => {
  const dir = scratch(t);
  t.throws(() => resolveConfig({ nodeId: 'a', coordinator: { token: 'short' } }, {}), {
    code: 'E_CONFIG',
    message: /coordinator\.token: must be at least 16 characters/,
  });
  const file = path.join(dir, 'agent.token');
  fs.writeFileSync(file, `${TOKEN}\n`, { mode: 0o644 });
  fs.chmodSync(file, 0o644);
  t.throws(() => resolveConfig({ nodeId: 'a', coordinator: { tokenFile: file } }, {}), {
    code: 'E_CONFIG',
    message: new RegExp(`coordinator\\.tokenFile: ${file} is mode 0644, open to others than its owner: chmod 0600 ${file}`),
  });
  fs.chmodSync(file, 0o640);
  t.throws(() => resolveConfig({ nodeId: 'a', coordinator: { tokenFile: file } }, {}), { message: /mode 0640/ });
  fs.chmodSync(file, 0o600);
  t.equal(resolveConfig({ nodeId: 'a', coordinator: { tokenFile: file } }, {}).coordinator.token, TOKEN);
  fs.writeFileSync(file, 'tiny\n');
  t.throws(() => resolveConfig({ nodeId: 'a', coordinator: { tokenFile: file } }, {}), { message: /coordinator\.tokenFile: must be at least 16 characters/ });
});

t.test('coordinator.caFile: read at load, a PEM certificate or refused', async (t) => {
  const dir = scratch(t);
  t.throws(() => resolveConfig({ nodeId: 'a', coordinator: { caFile: path.join(dir, 'missing.crt') } }, {}), {
    code: 'E_CONFIG',
    message: /coordinator\.caFile: cannot be read/,
  });
  fs.writeFileSync(path.join(dir, 'junk.crt'), 'not a certificate');
  t.throws(() => resolveConfig({ nodeId: 'a', coordinator: { caFile: 'junk.crt' } }, {}, dir), {
    message: /coordinator\.caFile: .*junk\.crt holds no PEM certificate/,
  });
  const tls = makeTestTls(path.join(dir, 'tls'), { dns: ['localhost'] });
  const c = resolveConfig({ nodeId: 'a', coordinator: { caFile: tls.ca } }, {});
  t.equal(c.coordinator.ca, fs.readFileSync(tls.ca, 'utf8'));
});

t.test("the journal is root's: state dir 0700 and journal 0600, also over an older, laxer install", async (t) => {
  const dir = path.join(scratch(t), 'state');
  fs.mkdirSync(dir, { mode: 0o755 });
  fs.chmodSync(dir, 0o755);
  fs.writeFileSync(path.join(dir, 'journal.sqlite'), '', { mode: 0o644 });
  fs.chmodSync(path.join(dir, 'journal.sqlite'), 0o644);
  const j = new Journal(dir);
  j.close();
  const mode = (p: string) => (fs.statSync(p).mode & 0o777).toString(8);
  t.equal(mode(dir), '700');
  for (const f of fs.readdirSync(dir)) t.equal(mode(path.join(dir, f)), '600', f);
  const fresh = path.join(path.dirname(dir), 'fresh');
  new Journal(fresh).close();
  t.equal(mode(fresh), '700');
  t.equal(mode(path.join(fresh, 'journal.sqlite')), '600');
});

t.test('wss:// with a private CA: trusted when named as caFile, refused otherwise', async (t) => {
  const dir = scratch(t);
  const tls = makeTestTls(path.join(dir, 'tls'), { dns: ['localhost'], ips: ['127.0.0.1'] });
  const other = makeTestTls(path.join(dir, 'other'), { dns: ['localhost'] });
  const server = createServer({ cert: fs.readFileSync(tls.cert), key: fs.readFileSync(tls.key) });
  const tlsErrors: string[] = [];
  server.on('tlsClientError', (err) => tlsErrors.push(err.message));
  const wss = new WebSocketServer({ server, path: '/agent' });
  const got: AgentMessage[] = [];
  wss.on('connection', (ws) => {
    ws.on('message', (raw) => {
      const d = decodeAgentMessage(raw as Buffer);
      if (!d.ok) return;
      got.push(d.message);
      if (d.message.type === 'hello') ws.send(encode(coordinatorMessage('welcome', { heartbeatIntervalMs: 200 })));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `wss://127.0.0.1:${(server.address() as { port: number }).port}`;

  const rig = await makeRig(t);
  const agent = new Agent(loadConfig(rig.configPath, {}), createLogger('silent', true));
  const dial = (ca: string) => new Connection(agent, { url, token: TOKEN, nodeId: 'v0', reconnectMaxMs: 300, reconnectBaseMs: 100, ca }, agent.log);
  t.teardown(async () => {
    await agent.idle();
    agent.close();
    for (const c of wss.clients) c.terminate();
    await new Promise((r) => wss.close(r));
    await new Promise((r) => server.close(r));
  });

  // Signed by another CA: the handshake fails on the server's side, no hello arrives.
  const wrong = dial(fs.readFileSync(other.ca, 'utf8'));
  void wrong.run();
  await waitFor(() => (tlsErrors.length > 0 ? true : undefined), { what: 'a refused TLS handshake', timeoutMs: 10_000 });
  wrong.stop();
  t.equal(got.length, 0, 'nothing reached the coordinator through an untrusted certificate');

  const right = dial(fs.readFileSync(tls.ca, 'utf8'));
  void right.run();
  t.teardown(() => right.stop());
  const hello = await waitFor(() => got.find((m) => m.type === 'hello'), { what: 'hello over wss', timeoutMs: 10_000 });
  t.equal(hello.type, 'hello', 'the agent trusts the named CA and says hello over wss://');
});
