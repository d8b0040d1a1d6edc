/**
 * Release signatures. A release is signed with ed25519 over a short statement
 * naming the artifact's sha256, not over the raw bytes, so the agent can verify
 * a multi-hundred-megabyte artifact while streaming it through sha256 instead
 * of holding it in memory.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';

export const SIGNATURE_CONTEXT = 'guts-node-artifact:v1:';

function statement(sha256Hex: string): Buffer {
  return Buffer.from(SIGNATURE_CONTEXT + sha256Hex.toLowerCase(), 'utf8');
}

function asPrivateKey(key: string | KeyObject): KeyObject {
  return typeof key === 'string' ? createPrivateKey(key) : key;
}

function asPublicKey(key: string | KeyObject): KeyObject {
  return typeof key === 'string' ? createPublicKey(key) : key;
}

/** Base64 ed25519 signature of an artifact whose sha256 is given in hex. */
export function signArtifactDigest(sha256Hex: string, privateKeyPem: string | KeyObject): string {
  return sign(null, statement(sha256Hex), asPrivateKey(privateKeyPem)).toString('base64');
}

/** Whether signatureB64 is a valid release signature of that digest. Never throws on bad input. */
export function verifyArtifactDigest(sha256Hex: string, signatureB64: string, publicKeyPem: string | KeyObject): boolean {
  try {
    const sig = Buffer.from(signatureB64, 'base64');
    if (sig.length !== 64) return false;
    return verify(null, statement(sha256Hex), asPublicKey(publicKeyPem), sig);
  } catch {
    return false;
  }
}

/** A fresh release key pair, PEM encoded (for release tooling and tests). */
export function generateReleaseKeyPair(): { publicKeyPem: string; privateKeyPem: string } {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  return {
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  };
}
