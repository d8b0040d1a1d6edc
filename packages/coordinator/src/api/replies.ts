/**
 * How the API answers errors: always { error: { code, message, ... } } with
 * the HTTP status the error catalogue gives the code. Schema failures name the
 * field; anything unexpected is logged and answered with its code (500).
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { CodedError, errorCodeOf, httpStatusOf, type ErrorCode } from '@guts-upgrade/protocol';
import { BODY_LIMIT_BYTES } from './json-body.js';

export function sendError(reply: FastifyReply, code: ErrorCode, message: string, extra: { field?: string; reason?: string; [k: string]: unknown } = {}) {
  return reply.status(httpStatusOf(code)).send({ error: { code, message, ...extra } });
}

interface AjvError {
  instancePath?: string;
  message?: string;
  params?: { missingProperty?: string; additionalProperty?: string };
}

/** The field a schema failure is about, e.g. body.options.maxUnavailable, and why. */
function schemaFailure(err: FastifyError & { validation: AjvError[] }): { field: string; reason: string } {
  const v: AjvError = err.validation[0] ?? {};
  const missing = v.params?.missingProperty;
  const extra = v.params?.additionalProperty;
  const path = String(v.instancePath ?? '')
    .replace(/^\//, '')
    .replace(/\//g, '.');
  const field = [err.validationContext ?? 'body', path, missing ?? extra].filter(Boolean).join('.');
  const reason = extra ? 'unknown property' : missing ? 'is required' : String(v.message ?? 'invalid');
  return { field, reason };
}

export function errorHandler(log: Logger) {
  return (err: FastifyError, _req: FastifyRequest, reply: FastifyReply) => {
    if (err.validation) {
      const { field, reason } = schemaFailure(err as FastifyError & { validation: AjvError[] });
      return sendError(reply, 'E_BAD_MESSAGE', `${field}: ${reason}`, { field, reason });
    }
    if ((err as unknown) instanceof CodedError) {
      const coded = err as unknown as CodedError;
      return sendError(reply, coded.code, coded.message, { ...(coded.details ?? {}) });
    }
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return sendError(reply, 'E_BODY_TOO_LARGE', `the body is larger than the ${Math.round(BODY_LIMIT_BYTES / 1024)} KiB the API accepts`, {
        field: 'body',
        reason: 'too large',
      });
    }
    if (typeof err.code === 'string' && err.code.startsWith('FST_') && (err.statusCode ?? 500) < 500) {
      return sendError(reply, 'E_BAD_MESSAGE', err.message, { field: 'body', reason: err.message });
    }
    const code = errorCodeOf(err);
    log.error({ err }, 'request failed');
    return sendError(reply, code, err.message ?? 'internal error');
  };
}
