import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CodedError, ERROR_CODES, errorCodeOf, httpStatusOf, isErrorCode } from '../src/errors.js';

t.test('every code is documented in docs/errors.md with its meaning and what to do', async (t) => {
  const doc = readFileSync(fileURLToPath(new URL('../../../../docs/errors.md', import.meta.url)), 'utf8');
  for (const [code, info] of Object.entries(ERROR_CODES)) {
    t.ok(info.action.length > 0, `${code} says what to do`);
    t.ok(doc.includes(`| \`${code}\` | ${info.message} | ${info.action} |`), `${code}: the row in docs/errors.md matches the catalogue`);
  }
});

t.test('codes are well formed and CodedError carries them', async (t) => {
  for (const code of Object.keys(ERROR_CODES)) t.match(code, /^E_[A-Z0-9_]+$/);
  const err = new CodedError('E_CHECKSUM', 'expected abc, got def', { expected: 'abc' });
  t.equal(err.message, 'E_CHECKSUM: expected abc, got def');
  t.equal(errorCodeOf(err), 'E_CHECKSUM');
  t.equal(errorCodeOf(new Error('plain')), 'E_INTERNAL');
  t.equal(errorCodeOf(Object.assign(new Error('x'), { code: 'E_BUSY' })), 'E_BUSY');
  t.equal(isErrorCode('E_NOPE'), false);
});

t.test('each code carries its HTTP status beside its message', async (t) => {
  t.equal(httpStatusOf('E_BAD_MESSAGE'), 400);
  t.equal(httpStatusOf('E_AUTH'), 401);
  t.equal(httpStatusOf('E_FORBIDDEN'), 403);
  t.equal(httpStatusOf('E_NOT_FOUND'), 404);
  t.equal(httpStatusOf('E_INVALID_STATE'), 409);
  t.equal(httpStatusOf('E_INTERNAL'), 500, "a code that is not the caller's doing is a 500");
  for (const [code, info] of Object.entries(ERROR_CODES)) t.ok(info.message.length > 0, `${code} has a message`);
});
