/**
 * Parsing and building wire messages. Every inbound message goes through
 * decodeAgentMessage / decodeCoordinatorMessage, which return either the typed
 * message or one specific error (the JSON path and what was expected), so a
 * malformed message is refused with a message an operator can act on.
 */
import type { TSchema } from '@sinclair/typebox';
import type { TypeCheck } from '@sinclair/typebox/compiler';
import { createHash } from 'node:crypto';
import type { ErrorCode } from './errors.js';
import {
  agentCheckers,
  commandCheckers,
  coordinatorCheckers,
  type AgentMessage,
  type AgentMessageType,
  type Body,
  type Command,
  type CoordinatorMessage,
  type CoordinatorMessageType,
} from './messages.js';

export const PROTOCOL_VERSION = '1.5';

/** Largest frame either side accepts; bigger frames are refused unparsed. */
export const MAX_FRAME_BYTES = 1024 * 1024;

export type Decoded<M> = { ok: true; message: M } | { ok: false; code: ErrorCode; error: string };

/**
 * Same major: compatible (a newer minor only adds optional fields).
 * Another major: refused.
 */
export function checkProtocolVersion(
  peer: unknown,
  ours: string = PROTOCOL_VERSION,
): { ok: true } | { ok: false; code: 'E_PROTOCOL_VERSION' | 'E_BAD_MESSAGE'; error: string } {
  const m = typeof peer === 'string' ? /^(\d+)\.(\d+)$/.exec(peer) : null;
  if (!m) return { ok: false, code: 'E_BAD_MESSAGE', error: `proto: expected "MAJOR.MINOR", got ${JSON.stringify(peer)}` };
  const ourMajor = ours.split('.')[0];
  if (m[1] !== ourMajor) {
    return {
      ok: false,
      code: 'E_PROTOCOL_VERSION',
      error: `protocol ${peer} is incompatible with ${ours}: major versions differ; upgrade the ${Number(m[1]) < Number(ourMajor) ? 'peer' : 'local side'}`,
    };
  }
  return { ok: true };
}

function firstError(checker: TypeCheck<TSchema>, value: unknown, prefix: string): string {
  const err = checker.Errors(value).First();
  if (!err) return `${prefix}: invalid`;
  const path = err.path ? err.path.replace(/^\//, '').replace(/\//g, '.') : '';
  const shown = err.value === undefined ? 'missing' : JSON.stringify(err.value)?.slice(0, 80);
  return `${prefix}${path ? `.${path}` : ''}: ${err.message} (got ${shown})`;
}

function parseFrame(raw: unknown): { ok: true; value: Record<string, unknown> } | { ok: false; error: string } {
  let value: unknown = raw;
  if (typeof raw === 'string' || Buffer.isBuffer(raw)) {
    const size = typeof raw === 'string' ? Buffer.byteLength(raw) : raw.length;
    if (size > MAX_FRAME_BYTES) return { ok: false, error: `frame of ${size} bytes exceeds ${MAX_FRAME_BYTES}` };
    try {
      value = JSON.parse(raw.toString());
    } catch (err) {
      return { ok: false, error: `not JSON: ${(err as Error).message}` };
    }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, error: 'a message must be a JSON object' };
  }
  return { ok: true, value: value as Record<string, unknown> };
}

const SAME_VERSION = { ok: true } as const;

function decodeWith<M>(raw: unknown, checkerFor: (value: Record<string, unknown>) => { checker: TypeCheck<TSchema>; label: string } | string): Decoded<M> {
  const frame = parseFrame(raw);
  if (!frame.ok) return { ok: false, code: 'E_BAD_MESSAGE', error: frame.error };
  // Every message of a peer on our own version: no parsing of the version string.
  const version = frame.value.proto === PROTOCOL_VERSION ? SAME_VERSION : checkProtocolVersion(frame.value.proto);
  if (!version.ok) return { ok: false, code: version.code, error: version.error };
  const found = checkerFor(frame.value);
  if (typeof found === 'string') return { ok: false, code: 'E_BAD_MESSAGE', error: found };
  if (!found.checker.Check(frame.value)) {
    return { ok: false, code: 'E_BAD_MESSAGE', error: firstError(found.checker, frame.value, found.label) };
  }
  return { ok: true, message: frame.value as M };
}

function lookup<K extends string>(table: Record<K, TypeCheck<TSchema>>, key: unknown, field: string, label: string) {
  if (typeof key !== 'string' || !Object.hasOwn(table, key)) {
    return `${field}: unknown ${label} ${JSON.stringify(key)}; expected one of ${Object.keys(table).join(', ')}`;
  }
  return { checker: table[key as K], label: key };
}

/** Validates a message an agent sent. */
export function decodeAgentMessage(raw: unknown): Decoded<AgentMessage> {
  return decodeWith<AgentMessage>(raw, (v) => lookup(agentCheckers, v.type, 'type', 'message type'));
}

/** Validates a message the coordinator sent. Commands are checked per kind for a precise error. */
export function decodeCoordinatorMessage(raw: unknown): Decoded<CoordinatorMessage> {
  return decodeWith<CoordinatorMessage>(raw, (v) => {
    if (v.type === 'command') {
      const found = lookup(commandCheckers, v.kind, 'kind', 'command kind');
      return typeof found === 'string' ? found : { checker: found.checker, label: `command(${found.label})` };
    }
    return lookup(coordinatorCheckers, v.type, 'type', 'message type');
  });
}

/** Builds a wire message with the envelope. */
export function agentMessage<T extends AgentMessageType>(type: T, body: Body<Extract<AgentMessage, { type: T }>>): Extract<AgentMessage, { type: T }> {
  return { proto: PROTOCOL_VERSION, type, ...body } as unknown as Extract<AgentMessage, { type: T }>;
}

export function coordinatorMessage<T extends CoordinatorMessageType>(
  type: T,
  body: Body<Extract<CoordinatorMessage, { type: T }>>,
): Extract<CoordinatorMessage, { type: T }> {
  return { proto: PROTOCOL_VERSION, type, ...body } as unknown as Extract<CoordinatorMessage, { type: T }>;
}

export function encode(message: AgentMessage | CoordinatorMessage): string {
  return JSON.stringify(message);
}

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * A digest of what a command asks for (its id and content, not when it was
 * sent). The receiver stores it with the id: the same id with the same digest
 * is a redelivery to acknowledge as a duplicate; the same id with another
 * digest is a conflict (E_DUPLICATE_COMMAND).
 */
export function commandDigest(command: Command): string {
  const { issuedAt: _issuedAt, proto: _proto, ...content } = command;
  return createHash('sha256').update(canonical(content)).digest('hex');
}

export type Delivery = 'new' | 'duplicate' | 'conflict';

/** Classifies a delivery against the digest stored for its id (undefined: never seen). */
export function classifyDelivery(command: Command, storedDigest: string | undefined | null): Delivery {
  if (storedDigest == null) return 'new';
  return storedDigest === commandDigest(command) ? 'duplicate' : 'conflict';
}
