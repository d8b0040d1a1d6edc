/** A small HTTP client for the API over TCP or a unix socket (used by the CLI, the demo and tests). */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';

export interface ApiTarget {
  url?: string;
  socket?: string;
  token?: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly body: unknown,
  ) {
    super(`${code}: ${message}`);
  }
}

export async function api<T = any>(target: ApiTarget, method: string, path: string, body?: unknown): Promise<T> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const base = target.url ? new URL(target.url) : null;
  const req = (base?.protocol === 'https:' ? httpsRequest : httpRequest)({
    method,
    ...(target.socket ? { socketPath: target.socket } : { host: base?.hostname ?? '127.0.0.1', port: base?.port || (base?.protocol === 'https:' ? 443 : 80) }),
    path,
    headers: {
      ...(target.token ? { authorization: `Bearer ${target.token}` } : {}),
      ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
    },
  });
  return new Promise<T>((resolve, reject) => {
    req.on('error', reject);
    req.setTimeout(30_000, () => req.destroy(new Error('request timed out')));
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: any = text;
        try {
          parsed = text ? JSON.parse(text) : null;
        } catch {
          /* not JSON (metrics) */
        }
        if ((res.statusCode ?? 500) >= 400) {
          reject(new ApiError(res.statusCode ?? 500, parsed?.error?.code ?? 'E_INTERNAL', parsed?.error?.message ?? text, parsed));
        } else resolve(parsed as T);
      });
    });
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}
