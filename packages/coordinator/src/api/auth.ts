/**
 * Operator authentication for the API: a bearer token from the config; a
 * viewer may only read (GET, HEAD). The principal rides on the request, and
 * every change is recorded under its name.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Operators, Principal } from '../engine/operators.js';
import { sendError } from './replies.js';

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
  }
}

export function operatorAuth(operators: Pick<Operators, 'authenticate'>) {
  return async (req: FastifyRequest, reply: FastifyReply) => {
    const op = operators.authenticate(req.headers.authorization);
    if (!op) return sendError(reply, 'E_AUTH', 'missing or unknown operator token');
    if (req.method !== 'GET' && req.method !== 'HEAD' && op.role !== 'operator') {
      return sendError(reply, 'E_FORBIDDEN', `role ${op.role} may only read`);
    }
    req.principal = op;
  };
}

/** Who did it, as the audit log names operators. */
export function actorOf(req: FastifyRequest): string {
  return `operator:${req.principal?.name ?? '?'}`;
}
