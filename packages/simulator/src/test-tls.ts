/**
 * A throwaway certificate authority and one server certificate it signed, made
 * with the machine's openssl: for tests, the demo and benchmarks that run the
 * coordinator over TLS as a deployment does (agents refuse ws:// to another host).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface TestTls {
  /** The CA's certificate: what agents name as coordinator.caFile. */
  ca: string;
  cert: string;
  key: string;
}

export function makeTestTls(dir: string, san: { dns?: string[]; ips?: string[] }): TestTls {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const f = (n: string) => path.join(dir, n);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ssl('req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.crt'), '-subj', '/CN=guts-upgrade test CA', '-days', '2');
  const names = [...(san.dns ?? []).map((d) => `DNS:${d}`), ...(san.ips ?? []).map((i) => `IP:${i}`)].join(',');
  writeFileSync(f('san.ext'), `subjectAltName=${names}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
  ssl('req', '-new', ...ec, '-keyout', f('tls.key'), '-out', f('tls.csr'), '-subj', `/CN=${san.dns?.[0] ?? san.ips?.[0] ?? 'server'}`);
  ssl(
    'x509',
    '-req',
    '-in',
    f('tls.csr'),
    '-CA',
    f('ca.crt'),
    '-CAkey',
    f('ca.key'),
    '-CAcreateserial',
    '-out',
    f('tls.crt'),
    '-days',
    '2',
    '-extfile',
    f('san.ext'),
  );
  return { ca: f('ca.crt'), cert: f('tls.crt'), key: f('tls.key') };
}
