import t from 'tap';
import { createHash } from 'node:crypto';
import { generateReleaseKeyPair, signArtifactDigest, verifyArtifactDigest } from '../src/signature.js';

t.test('a release signature verifies only for its digest and key', async (t) => {
  const keys = generateReleaseKeyPair();
  const other = generateReleaseKeyPair();
  const digest = createHash('sha256').update('guts-node 1.1.0 bytes').digest('hex');
  const sig = signArtifactDigest(digest, keys.privateKeyPem);
  t.equal(verifyArtifactDigest(digest, sig, keys.publicKeyPem), true);
  t.equal(verifyArtifactDigest(digest.toUpperCase(), sig, keys.publicKeyPem), true, 'hex case does not matter');
  const tampered = createHash('sha256').update('guts-node 1.1.0 bytez').digest('hex');
  t.equal(verifyArtifactDigest(tampered, sig, keys.publicKeyPem), false, 'other artifact');
  t.equal(verifyArtifactDigest(digest, sig, other.publicKeyPem), false, 'other key');
  t.equal(verifyArtifactDigest(digest, 'not base64!', keys.publicKeyPem), false, 'garbage signature');
  t.equal(verifyArtifactDigest(digest, sig, 'not a key'), false, 'garbage key');
});

t.test('the digest-signing recipe in docs/runbook.md, run as written with OpenSSL, makes a signature the agent accepts', async (t) => {
  const { execFileSync } = await import('node:child_process');
  const { mkdtempSync, readFileSync, rmSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const doc = readFileSync(new URL('../../../../docs/runbook.md', import.meta.url), 'utf8');
  const heading = '### A digest signature, for hosts with `allowUnsigned`';
  t.ok(doc.includes(heading), 'the runbook still has the recipe');
  const section = doc.slice(doc.indexOf(heading), doc.indexOf('\n## ', doc.indexOf(heading) + 1));
  const lines = section
    .split('\n')
    .filter((l) => l.startsWith('    '))
    .map((l) => l.trim());
  t.same(
    lines.map((l) => l.split(/\s/)[0]),
    ['openssl', 'openssl', 'SHA=$(sha256sum', 'printf', 'openssl'],
    'the recipe: a key pair once, then per release the statement and its signature',
  );
  const dir = mkdtempSync(join(tmpdir(), 'guts-sign-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const artifact = Buffer.from('#!/bin/sh\necho guts-node 1.1.0\n');
  writeFileSync(join(dir, 'guts-node'), artifact);
  const sig = execFileSync('sh', ['-ec', lines.join('\n')], { cwd: dir, encoding: 'utf8' }).trim();
  const sha = createHash('sha256').update(artifact).digest('hex');
  const pub = readFileSync(join(dir, 'release.pub'), 'utf8');
  t.equal(verifyArtifactDigest(sha, sig, pub), true, `the agent's verifier accepts it (${sig.slice(0, 16)}…)`);
  t.equal(verifyArtifactDigest(createHash('sha256').update('other').digest('hex'), sig, pub), false, 'and only for that artifact');
});
