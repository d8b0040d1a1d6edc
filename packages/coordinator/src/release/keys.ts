/**
 * Release signing keys: ed25519, one JSON file per key under
 * <keysDir>/<role>/<keyid>.json (0600, in 0700 dirs). One dir per role so the
 * root and targets keys can be moved offline (a USB stick, an HSM export)
 * while the snapshot and timestamp keys stay where `release add` and
 * `release timestamp` run. The keys dir is never inside the repository dir,
 * which is served as is.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Key, Signature } from '@tufjs/models';
import { ReleaseError } from './errors.js';

export const ROLES = ['root', 'targets', 'snapshot', 'timestamp'] as const;
export type RoleName = (typeof ROLES)[number];

export interface KeyFile {
  keyid: string;
  keytype: 'ed25519';
  scheme: 'ed25519';
  /** Raw 32-byte public key, hex: the form TUF's ed25519 keyval takes. */
  public: string;
  /** PKCS#8 PEM. */
  private: string;
}

export interface Signer {
  keyid: string;
  sign(data: Buffer): Signature;
}

/** TUF key id: sha256 of the canonical JSON of the public key (keys sorted, no spaces). */
function keyIdOf(pub: string): string {
  const canonical = `{"keytype":"ed25519","keyval":{"public":"${pub}"},"scheme":"ed25519"}`;
  return crypto.createHash('sha256').update(canonical).digest('hex');
}

export function publicKey(k: KeyFile): Key {
  return new Key({ keyID: k.keyid, keyType: k.keytype, scheme: k.scheme, keyVal: { public: k.public } });
}

/** A fresh ed25519 key for `role`, written to its file before it is used anywhere. */
export function generateKey(keysDir: string, role: RoleName): KeyFile {
  const { publicKey: pub, privateKey } = crypto.generateKeyPairSync('ed25519');
  // The SPKI DER of an ed25519 key ends with the 32 raw key bytes.
  const raw = pub.export({ format: 'der', type: 'spki' }).subarray(-32).toString('hex');
  const k: KeyFile = {
    keyid: keyIdOf(raw),
    keytype: 'ed25519',
    scheme: 'ed25519',
    public: raw,
    private: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
  };
  const dir = path.join(keysDir, role);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(path.join(dir, `${k.keyid}.json`), `${JSON.stringify(k, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  return k;
}

/** The keys of `role` found in the keys dir (an offline role's dir may be absent). */
export function loadKeys(keysDir: string, role: RoleName): KeyFile[] {
  const dir = path.join(keysDir, role);
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => {
      const file = path.join(dir, f);
      try {
        const k = JSON.parse(fs.readFileSync(file, 'utf8')) as KeyFile;
        if (k.keytype !== 'ed25519' || typeof k.private !== 'string' || keyIdOf(k.public) !== k.keyid) throw new Error('not an ed25519 key file');
        return k;
      } catch (err) {
        throw new ReleaseError('E_RELEASE_KEYS', `${file}: ${(err as Error).message}`);
      }
    });
}

export function signerOf(k: KeyFile): Signer {
  const key = crypto.createPrivateKey(k.private);
  return { keyid: k.keyid, sign: (data) => new Signature({ keyID: k.keyid, sig: crypto.sign(null, data, key).toString('hex') }) };
}

/**
 * The signers for `role`: the keys in the keys dir that the root lists for it.
 * Fewer than the threshold is refused here, so the tool never publishes
 * metadata the agents would refuse (E_RELEASE_SIGNATURE there).
 */
export function signersFor(keysDir: string, role: RoleName, keyIds: readonly string[], threshold: number): Signer[] {
  const usable = loadKeys(keysDir, role).filter((k) => keyIds.includes(k.keyid));
  if (usable.length < threshold) {
    throw new ReleaseError(
      'E_RELEASE_KEYS',
      `${role} needs ${threshold} signature(s) and ${path.join(keysDir, role)} holds ${usable.length} of its keys; bring the ${role} keys (or pass --keys-dir) and retry. Nothing was written.`,
    );
  }
  return usable.map(signerOf);
}
