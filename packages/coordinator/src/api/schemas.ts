/**
 * The TypeBox schemas the routes share. Routes declare their own request
 * schemas beside them; these are the pieces several resources use. Enums come
 * from the model, so a new strategy or action needs no second list here.
 */
import { Type, type TSchema } from '@sinclair/typebox';

/** A string enum as plain JSON Schema ({ type: 'string', enum }), typed as the union of its values. */
export function stringEnum<T extends string>(values: readonly T[]) {
  return Type.Unsafe<T>({ type: 'string', enum: [...values] });
}

export const NodeId = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' });
export const RolloutId = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$' });

/** Sequence numbers and limits arrive as query strings (ajv does not coerce): digits only. */
export const Digits = (max: number) => Type.String({ pattern: `^[0-9]{1,${max}}$` });

/**
 * The error body of every 4xx answer. Serialized with this schema, so only
 * these fields reach the client (details such as a conflicting rollout id
 * stay in the message).
 */
export const ErrorBody = Type.Object({
  error: Type.Object({
    code: Type.String(),
    message: Type.String(),
    field: Type.Optional(Type.String()),
    reason: Type.Optional(Type.String()),
  }),
});

const BEARER = [{ bearer: [] as string[] }];

/**
 * Success bodies are the services' own records, serialized as they are (an empty schema is plain
 * JSON.stringify): listing their fields here would drop any field a schema forgot.
 */
const AnyBody = Type.Unknown();

/** A route schema for the operator API: bearer auth in the OpenAPI document and the error body for 4xx. */
export function operatorRoute<T extends { tags: string[]; body?: TSchema; params?: TSchema; querystring?: TSchema }>(schema: T) {
  return { ...schema, security: BEARER, response: { '2xx': AnyBody, '4xx': ErrorBody } };
}
