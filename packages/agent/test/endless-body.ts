import type http from 'node:http';

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
