/** The release policy, the tuf-js error mapping and the `release` configuration, as pure functions (release.test.ts runs them end to end). */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { resolveConfig } from '../src/config.js';
import { checkReleasePolicy, parseCustom, releaseErrorCode, releaseTargetName } from '../src/release-repo.js';

const custom = (pathKind: 'patch' | 'minor' | 'major', minFrom?: string) => ({
  version: '2.0.0',
  pathKind,
  migration: 'manual' as const,
  ...(minFrom ? { minFrom } : {}),
});

t.test('path kind bounds the jump; min-from bounds the running version; a downgrade needs local policy', async (t) => {
  t.doesNotThrow(() => checkReleasePolicy(custom('major'), '1.4.0', false));
  t.throws(() => checkReleasePolicy(custom('minor'), '1.4.0', false), { code: 'E_RELEASE_POLICY', message: /major jump .* allows at most minor/ });
  t.throws(() => checkReleasePolicy(custom('major', '1.5.0'), '1.4.0', false), { code: 'E_RELEASE_POLICY', message: /1\.5\.0 or later only/ });
  t.doesNotThrow(() => checkReleasePolicy(custom('major', '1.5.0'), '1.5.0', false));
  const patch = { version: '1.0.1', pathKind: 'patch' as const, migration: 'none' as const };
  t.throws(() => checkReleasePolicy(patch, '1.0.3', false), { code: 'E_RELEASE_POLICY', message: /release\.allowDowngrade/ });
  t.doesNotThrow(() => checkReleasePolicy(patch, '1.0.3', true));
});

t.test('custom fields must be what the release tool signs', async (t) => {
  const name = releaseTargetName('v1.1.0');
  t.equal(name, 'guts-node/1.1.0/guts-node');
  t.same(parseCustom(name, '1.1.0', { version: '1.1.0', pathKind: 'minor', migration: 'automatic' }), {
    version: '1.1.0',
    pathKind: 'minor',
    migration: 'automatic',
  });
  for (const bad of [undefined, {}, { version: '1.2.0', pathKind: 'minor', migration: 'none' }, { version: '1.1.0', pathKind: 'huge', migration: 'none' }]) {
    t.throws(() => parseCustom(name, '1.1.0', bad), { code: 'E_RELEASE_INVALID' });
  }
});

t.test("tuf-js's failures map to named codes, wrapped or not", async (t) => {
  const e = (name: string, message: string) => Object.assign(new Error(message), { name });
  const cases: [unknown, 'metadata' | 'target', string][] = [
    [e('UnsignedMetadataError', 'targets was signed by 1/2 keys'), 'metadata', 'E_RELEASE_SIGNATURE'],
    [new Error('Unable to load targets error Error: targets was signed by 0/2 keys'), 'metadata', 'E_RELEASE_SIGNATURE'],
    [e('ExpiredMetadataError', 'Final timestamp.json is expired'), 'metadata', 'E_RELEASE_EXPIRED'],
    [e('BadVersionError', 'New timestamp version 1 is less than current version 2'), 'metadata', 'E_RELEASE_ROLLBACK'],
    [new Error('Unable to load snapshot metadata error Error: Expected hash abc but got def'), 'metadata', 'E_RELEASE_INCONSISTENT'],
    [e('BadVersionError', 'Version 2 of targets does not match snapshot version 3'), 'metadata', 'E_RELEASE_INCONSISTENT'],
    [e('LengthOrHashMismatchError', 'Expected length 10 but got 11'), 'target', 'E_RELEASE_TAMPERED'],
    [e('DownloadLengthMismatchError', 'Max length reached'), 'target', 'E_RELEASE_TAMPERED'],
    [e('DownloadHTTPError', 'Failed to download'), 'metadata', 'E_RELEASE_UNREACHABLE'],
    [new SyntaxError('Unexpected token'), 'metadata', 'E_RELEASE_INVALID'],
  ];
  for (const [err, stage, code] of cases) t.equal(releaseErrorCode(err, stage), code, (err as Error).message);
});

t.test('config release: repository needs a pinned root; defaults', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'guts-release-config-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const base = { nodeId: 'v0', stateDir: 'state' };
  const off = resolveConfig(base, {}, dir);
  t.equal(off.release.repository, null, 'off by default');
  t.equal(off.release.cacheDir, path.join(dir, 'state', 'tuf'));
  t.equal(off.release.allowDowngrade, false);
  t.throws(() => resolveConfig({ ...base, release: { repository: 'https://r.example' } }, {}, dir), {
    code: 'E_CONFIG',
    message: /release\.root: is required/,
  });
  t.throws(() => resolveConfig({ ...base, release: { repository: 'ftp://r.example', root: 'root.json' } }, {}, dir), {
    message: /release\.repository: must be an http/,
  });
  t.throws(() => resolveConfig({ ...base, release: { repository: 'https://r.example', root: 'root.json' } }, {}, dir), {
    message: /release\.root: cannot be read/,
  });
  fs.writeFileSync(path.join(dir, 'root.json'), JSON.stringify({ signed: { _type: 'targets' } }));
  t.throws(() => resolveConfig({ ...base, release: { repository: 'https://r.example', root: 'root.json' } }, {}, dir), { message: /is not TUF root metadata/ });
  fs.writeFileSync(path.join(dir, 'root.json'), JSON.stringify({ signed: { _type: 'root' } }));
  const on = resolveConfig({ ...base, release: { repository: 'https://r.example/guts/', root: 'root.json', cacheDir: '/var/cache/tuf' } }, {}, dir);
  t.equal(on.release.repository, 'https://r.example/guts');
  t.equal(on.release.root, path.join(dir, 'root.json'));
  t.equal(on.release.cacheDir, '/var/cache/tuf');
});
