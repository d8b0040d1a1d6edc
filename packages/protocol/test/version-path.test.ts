import t from 'tap';
import { CodedError } from '../src/errors.js';
import { checkUpgradePath, parseVersion, parseVersionOutput, upgradePath } from '../src/version-path.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof CodedError ? err.code : 'not-coded';
  }
  return undefined;
}

t.test('the matrix', async (t) => {
  t.match(upgradePath('1.0.0', '1.0.1'), { kind: 'patch', migration: 'none', downtime: false, requiresWindow: false, downgrade: false });
  t.match(upgradePath('1.0.3', '1.1.0'), { kind: 'minor', migration: 'automatic', downtime: false, requiresWindow: false });
  t.match(upgradePath('1.0.0', '1.3.2'), { kind: 'minor', migration: 'automatic' });
  t.match(upgradePath('1.4.2', '2.0.0'), { kind: 'major', migration: 'manual', downtime: true, requiresWindow: true });
});

t.test('prerelease versions', async (t) => {
  t.match(upgradePath('1.1.0-rc.1', '1.1.0'), { kind: 'patch', migration: 'none' });
  t.match(upgradePath('1.0.0', '1.1.0-rc.1'), { kind: 'minor' });
  t.match(upgradePath('1.9.0', '2.0.0-beta.2'), { kind: 'major', requiresWindow: true });
  t.equal(
    codeOf(() => upgradePath('1.1.0', '1.1.0-rc.1')),
    'E_DOWNGRADE',
    'a release to its own prerelease is a downgrade',
  );
});

t.test('downgrades are refused unless allowed', async (t) => {
  t.equal(
    codeOf(() => upgradePath('1.1.0', '1.0.9')),
    'E_DOWNGRADE',
  );
  t.equal(
    codeOf(() => upgradePath('2.0.0', '1.9.0')),
    'E_DOWNGRADE',
  );
  t.match(upgradePath('1.1.0', '1.0.9', { allowDowngrade: true }), { kind: 'minor', downgrade: true, migration: 'none' });
});

t.test('same version, skipped majors and malformed versions', async (t) => {
  t.equal(
    codeOf(() => upgradePath('1.0.0', '1.0.0')),
    'E_SAME_VERSION',
  );
  t.equal(
    codeOf(() => upgradePath('1.0.0', '3.0.0')),
    'E_UNSUPPORTED_PATH',
  );
  for (const bad of ['', '1.0', 'latest', '1.0.0.0', 'x1.0.0', ' ']) {
    t.equal(
      codeOf(() => upgradePath(bad, '1.0.0')),
      'E_BAD_VERSION',
      `from ${JSON.stringify(bad)}`,
    );
    t.equal(
      codeOf(() => upgradePath('1.0.0', bad)),
      'E_BAD_VERSION',
      `to ${JSON.stringify(bad)}`,
    );
  }
  t.equal(parseVersion('v1.2.3').version, '1.2.3');
});

t.test('checkUpgradePath returns the error instead of throwing', async (t) => {
  t.match(checkUpgradePath('1.0.0', '0.9.0'), { ok: false, code: 'E_DOWNGRADE' });
  t.match(checkUpgradePath('1.0.0', '1.0.1'), { ok: true, path: { kind: 'patch' } });
});

t.test('--version output of the real binary', async (t) => {
  t.equal(parseVersionOutput('guts-node 1.2.3\n'), '1.2.3');
  t.equal(parseVersionOutput('guts-node 2.0.0-rc.1'), '2.0.0-rc.1');
  t.equal(parseVersionOutput('something else 1.2.3'), null);
  t.equal(parseVersionOutput('guts-node banana'), null);
});
