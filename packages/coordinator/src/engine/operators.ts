/**
 * Operator authentication: the configured bearer tokens (stored as sha256
 * hashes) and the role each one grants. Viewers may only read.
 */
import { timingSafeEqual } from 'node:crypto';
import type { OperatorToken, Role } from '../config.js';
import { hashToken } from '../db.js';

export interface Principal {
  name: string;
  role: Role;
}

export class Operators {
  constructor(private readonly tokens: readonly OperatorToken[]) {}

  /** The operator an Authorization header names, or null for a missing or unknown token. */
  authenticate(authorization: string | undefined): Principal | null {
    const m = /^Bearer (.+)$/.exec(String(authorization ?? ''));
    if (!m) return null;
    const h = Buffer.from(hashToken(m[1]!), 'hex');
    const op = this.tokens.find((o) => timingSafeEqual(Buffer.from(o.tokenHash, 'hex'), h));
    return op ? { name: op.name, role: op.role } : null;
  }
}
