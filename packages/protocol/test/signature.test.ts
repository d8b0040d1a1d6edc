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
