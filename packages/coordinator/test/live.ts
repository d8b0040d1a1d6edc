/**
 * A real coordinator for a test (its SQLite file in a fresh temporary directory, a
 * loopback port, a silent log), closed and removed when the test ends; and the API
 * refusal a request ends in. Shared so that API tests do not each carry a copy.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { ApiError } from '../src/client.js';
import { buildConfig } from '../src/config.js';
import { startCoordinator, type RunningCoordinator } from '../src/server.js';

/** `config` is the YAML document's fields besides listen and db. */
export async function liveCoordinator(
  t: { teardown: (fn: () => Promise<void>) => void },
  name: string,
  config: Record<string, unknown>,
): Promise<RunningCoordinator> {
  const dir = mkdtempSync(join(tmpdir(), `guc-${name}-`));
  const c = await startCoordinator(buildConfig({ listen: { host: '127.0.0.1', port: 0 }, db: join(dir, 'c.db'), ...config }), {
    log: pino({ level: 'silent' }),
  });
  t.teardown(async () => {
    await c.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return c;
}

/** The ApiError a request is refused with; throws when it succeeds. */
export async function failure(p: Promise<unknown>): Promise<ApiError> {
  try {
    await p;
  } catch (e) {
    return e as ApiError;
  }
  throw new Error('expected an error');
}
