import http from 'node:http';

export interface Served {
  origin: string;
  /** The request paths, in order. */
  requests: string[];
}

/** A loopback HTTP server for one test, closed (connections too) at its teardown. */
export async function serve(t: { teardown(fn: () => unknown): void }, handler: (req: http.IncomingMessage, res: http.ServerResponse) => void): Promise<Served> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(req.url ?? '');
    handler(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
  const { port } = server.address() as { port: number };
  return { origin: `http://127.0.0.1:${port}`, requests };
}

/**
 * A response body that never ends (optionally announcing a length it will pass):
 * only a client that stops reading ends it, so a test using it passes only if the
 * agent really cuts the download off.
 */
export function endless(res: http.ServerResponse, announce?: number): void {
  res.writeHead(200, announce ? { 'content-length': String(announce) } : {});
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  let open = true;
  res.on('close', () => {
    open = false;
  });
  const pump = () => {
    while (open && res.write(chunk)) {
      /* keep writing */
    }
    if (open) res.once('drain', pump);
  };
  pump();
}
