/**
 * TEST DOUBLE — a lying node API, for tests only; nothing in the product
 * uses it. An HTTP proxy in front of one simulated node's API that forwards
 * every request unchanged except /api/consensus/status, which it rewrites to
 * claim an absurd finalized height, an absurd view, and that this node leads.
 * A real, unmodified agent pointed at the proxy then reports those lies to the
 * coordinator, as an agent on a compromised or broken host would.
 *
 * With `blocks`, /api/consensus/blocks is rewritten too: every recent block
 * claims this validator as its producer (a lie about liveness).
 *
 * When the node does not answer, the proxy drops the connection, so the agent
 * sees an unreachable node exactly as it would without the proxy.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Lies {
  /** The validator the liar claims to be (its own pubkey, hex). */
  pubkey: string;
  /**
   * 'fixed': finalized height 10^12 and view 10^9, never moving (the agent's
   * own post-upgrade "height advancing" check then fails on this node);
   * 'offset' (default): 10^12 + the real height and 10^9 + the real view, so
   * the lies still move and the liar can itself be upgraded.
   */
  mode?: 'fixed' | 'offset';
  /** Also rewrite /api/consensus/blocks: every block's producer becomes `pubkey`. */
  blocks?: boolean;
}

export const LIE_HEIGHT = 1e12;
export const LIE_VIEW = 1e9;

export interface LyingProxy {
  /** Base URL to give the agent as node.apiUrl. */
  url: string;
  close(): Promise<void>;
}

/** Starts the lying proxy on 127.0.0.1 in front of `target` (a node's API base URL). */
export async function startLyingProxy(target: string, lies: Lies): Promise<LyingProxy> {
  const base = target.replace(/\/+$/, '');
  const mode = lies.mode ?? 'offset';
  const rewrite = (path: string, body: unknown): unknown => {
    if (path === '/api/consensus/status' && body && typeof body === 'object') {
      const s = body as Record<string, unknown>;
      const h = typeof s.finalized_height === 'number' ? s.finalized_height : 0;
      const v = typeof s.view === 'number' ? s.view : 0;
      return {
        ...s,
        finalized_height: mode === 'fixed' ? LIE_HEIGHT : LIE_HEIGHT + h,
        view: mode === 'fixed' ? LIE_VIEW : LIE_VIEW + v,
        is_leader: true,
        current_leader: lies.pubkey,
      };
    }
    if (lies.blocks && path === '/api/consensus/blocks' && Array.isArray(body)) {
      return body.map((b) => (b && typeof b === 'object' ? { ...(b as object), producer: lies.pubkey } : b));
    }
    return body;
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers))
        if (typeof v === 'string' && k !== 'host' && k !== 'connection' && k !== 'content-length') headers[k] = v;
      const body = chunks.length ? Buffer.concat(chunks) : undefined;
      fetch(base + (req.url ?? '/'), { method: req.method, headers, body, signal: AbortSignal.timeout(10_000) })
        .then(async (up) => {
          let text = await up.text();
          const type = up.headers.get('content-type') ?? 'application/octet-stream';
          if (req.method === 'GET' && up.status === 200 && type.includes('json')) {
            try {
              text = JSON.stringify(rewrite(path, JSON.parse(text)));
            } catch {
              /* not JSON after all: pass it on */
            }
          }
          res.writeHead(up.status, { 'content-type': type });
          res.end(text);
        })
        .catch(() => res.socket?.destroy());
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
