/**
 * The API's JSON body parser. An empty body reads as {} (pause and the other
 * actions need none); a body that is not JSON, or that names a key twice in one
 * object, is refused before any route sees it, so it changes nothing.
 */
import type { FastifyInstance } from 'fastify';
import { CodedError } from '@guts-upgrade/protocol';
import { firstDuplicateKey } from './duplicate-keys.js';

/** The largest request body the API reads (E_BODY_TOO_LARGE in docs/errors.md says it too). */
export const BODY_LIMIT_BYTES = 256 * 1024;

export function jsonBodies(app: FastifyInstance): void {
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    const text = String(body);
    if (text.trim() === '') return done(null, {});
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      const e = new CodedError('E_BAD_MESSAGE', `body is not JSON: ${(err as Error).message}`, { field: 'body', reason: 'not JSON' });
      return done(e as never, undefined);
    }
    const dup = firstDuplicateKey(text);
    if (dup) {
      const e = new CodedError('E_DUPLICATE_KEY', `${dup.field} is given twice; send each key once`, { field: dup.field, reason: 'duplicate key' });
      return done(e as never, undefined);
    }
    done(null, parsed);
  });
}
