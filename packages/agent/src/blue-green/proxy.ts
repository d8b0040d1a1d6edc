/**
 * The reverse proxy in front of a blue-green follower: the agent owns one
 * small file, the upstream (nginx) or backend (haproxy) the operator's proxy
 * config includes, and moves traffic by rewriting it and reloading the proxy
 * gracefully (nginx: new workers take new connections, old ones finish what
 * they hold; haproxy: the same with -sf / master-worker USR2). A reload the
 * proxy refuses leaves it on its old config; the agent then puts the old
 * file back, so the file always says where traffic goes.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CodedError } from '@guts-upgrade/protocol';
import { runArgv } from '../util.js';
import type { BlueGreenConfig, ProxyKind } from './config.js';

const HEADER = '# Written by guts-upgrade-agent (blueGreen.proxy.config): the live guts-node container. Edited only by the agent.\n';

/** The upstream file for one backend address. */
export function renderUpstream(kind: ProxyKind, name: string, addr: string): string {
  if (kind === 'nginx') return `${HEADER}upstream ${name} {\n    server ${addr};\n}\n`;
  return `${HEADER}backend ${name}\n    server live ${addr}\n`;
}

/** The backend address the agent's file points at now, or null when there is no such file (yet). */
export function currentUpstream(file: string): string | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  return /^\s*server\s+(?:live\s+)?([^\s;]+)/m.exec(text)?.[1] ?? null;
}

function writeAtomic(file: string, text: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, text, { mode: 0o644 });
  fs.renameSync(tmp, file);
}

/** The proxy reloads its config: the operator's argv, or a signal to its master (HUP nginx, USR2 haproxy -W). */
async function reload(bg: BlueGreenConfig): Promise<void> {
  const p = bg.proxy;
  if (p.reload) {
    const r = await runArgv(p.reload, { timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`${p.reload.join(' ')} exited ${r.code ?? r.signal}: ${(r.stdout + r.stderr).trim().slice(-800)}`);
    return;
  }
  const pid = Number(fs.readFileSync(p.pidFile!, 'utf8').trim());
  if (!Number.isInteger(pid) || pid <= 1) throw new Error(`${p.pidFile} holds no pid`);
  process.kill(pid, p.kind === 'nginx' ? 'SIGHUP' : 'SIGUSR2');
}

/**
 * Points the proxy at `addr` and reloads it. Idempotent (a rerun after a crash
 * writes the same file and reloads again). On a refused reload the previous
 * file goes back and E_PROXY_RELOAD is thrown: traffic stays where it was.
 */
export async function pointProxyAt(bg: BlueGreenConfig, addr: string): Promise<void> {
  const file = bg.proxy.config;
  const prev = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null;
  try {
    writeAtomic(file, renderUpstream(bg.proxy.kind, bg.proxy.upstream, addr));
    await reload(bg);
  } catch (err) {
    if (prev !== null) writeAtomic(file, prev);
    else fs.rmSync(file, { force: true });
    throw new CodedError('E_PROXY_RELOAD', `cannot move ${bg.proxy.kind} (${file}) to ${addr}: ${(err as Error).message}`);
  }
}
