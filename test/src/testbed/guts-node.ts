import type { Host } from './lab.js';

/** Where the project's guts-node.service expects things. */
export const GUTS_NODE_BIN = '/usr/local/bin/guts-node';
export const GUTS_CONFIG = '/etc/guts/config.yaml';
export const GUTS_DATA = '/var/lib/guts';

/**
 * A stand-in for guts-node until packages/simulator lands: a Node script run
 * by the real guts-node.service. It reads `listen: <addr>:<port>` from the
 * config, touches the data dir, and answers GET / with what it could observe
 * about its sandbox, so tests can check the unit's hardening really applies.
 */
export const STANDIN_GUTS_NODE = String.raw`#!/usr/bin/node
const fs = require('node:fs');
const http = require('node:http');
const i = process.argv.indexOf('--config');
const cfgPath = i > 0 ? process.argv[i + 1] : '/etc/guts/config.yaml';
const cfg = fs.readFileSync(cfgPath, 'utf8');
const listen = /^listen:\s*(\S+):(\d+)\s*$/m.exec(cfg);
if (!listen) { console.error('no listen: in ' + cfgPath); process.exit(2); }
const canWrite = (p) => { try { fs.writeFileSync(p, 'x'); fs.unlinkSync(p); return true; } catch { return false; } };
const starts = (() => { try { return Number(fs.readFileSync('/var/lib/guts/starts', 'utf8')) + 1; } catch { return 1; } })();
fs.writeFileSync('/var/lib/guts/starts', String(starts));
const facts = {
  host: require('node:os').hostname(), pid: process.pid, uid: process.getuid(), starts,
  writeData: canWrite('/var/lib/guts/.probe'), writeEtc: canWrite('/etc/.guts-probe'),
  writeUsrLocal: canWrite('/usr/local/.guts-probe'), writeTmp: canWrite('/tmp/.guts-probe'),
  seesRoot: fs.existsSync('/root/.'), readsWork: fs.existsSync('/work'),
};
http.createServer((req, res) => { res.setHeader('content-type', 'application/json'); res.end(JSON.stringify(facts)); })
  .listen(Number(listen[2]), listen[1], () => console.log('standin guts-node listening on ' + listen[1] + ':' + listen[2]));
process.on('SIGTERM', () => { console.log('standin guts-node stopping'); process.exit(0); });
`;

/**
 * Puts a guts-node in place the way a release would: the binary at
 * /usr/local/bin/guts-node (a file of the machine, e.g. the simulator's
 * launcher `guts-node-1.0.0`, or the stand-in's source), the config at
 * /etc/guts/config.yaml, and the project's guts-node.service.
 */
export async function provisionGutsNode(
  host: Host,
  o: { binary?: string; binarySource?: string; config: string; start?: boolean; enable?: boolean },
): Promise<void> {
  if (o.binary) await host.copyIn(o.binary, GUTS_NODE_BIN, 0o755);
  else await host.writeFile(GUTS_NODE_BIN, o.binarySource ?? STANDIN_GUTS_NODE, 0o755);
  await host.writeFile(GUTS_CONFIG, o.config, 0o644);
  await host.installUnit('guts-node.service', { enable: o.enable ?? true, start: o.start ?? true });
}
