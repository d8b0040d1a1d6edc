/**
 * The API's route plugins against a real coordinator (SQLite file, loopback
 * port): the OpenAPI document lists what the model defines (strategies,
 * operator actions), and every error answer takes its HTTP status from the
 * error catalogue.
 */
import t from 'tap';
import { httpStatusOf, type ErrorCode } from '@guts-upgrade/protocol';
import { api } from '../src/client.js';
import type { EventsBody, FleetBody, NodeRegisteredBody } from '../src/client.js';
import { STRATEGIES } from '../src/model.js';
import { ACTIONS } from '../src/states.js';
import { failure, liveCoordinator } from './live.js';

const OP = 'operator-token-0123456789';
const VIEW = 'viewer-token-0123456789';

/** The parts of the OpenAPI document the test reads. */
interface OpenApiSchema {
  enum?: unknown[];
  required?: string[];
  description?: string;
  properties?: Record<string, OpenApiSchema>;
}
interface OpenApiOperation {
  security?: unknown;
  requestBody?: { content: Record<string, { schema: { properties: Record<string, OpenApiSchema> } }> };
}
interface OpenApiDoc {
  paths: Record<string, Record<string, OpenApiOperation>>;
}

t.test('route plugins follow the model and the error catalogue', async (t) => {
  const c = await liveCoordinator(t, 'api', {
    operators: [
      { name: 'alice', token: OP, role: 'operator' },
      { name: 'bob', token: VIEW, role: 'viewer' },
    ],
  });
  const op = { url: c.url!, token: OP };

  const doc = await api<OpenApiDoc>({ url: c.url! }, 'GET', '/docs/json');
  const body = doc.paths['/api/v1/rollouts']?.post?.requestBody?.content['application/json']?.schema;
  t.same(body?.properties.strategy?.enum, [...STRATEGIES], "the strategy enum is the model's STRATEGIES");
  const target = body?.properties.target;
  t.same(target?.required, ['version'], 'the target needs a version alone');
  for (const field of ['version', 'url', 'sha256', 'length', 'signature'])
    t.ok(target?.properties?.[field]?.description, `target.${field} says what it is for`);
  t.match(target?.properties?.url?.description, /allowUnsigned: true/, 'url: only for agents without a release repository');
  for (const action of Object.keys(ACTIONS)) t.ok(doc.paths[`/api/v1/rollouts/{id}/${action}`]?.post, `a route for the ${action} action`);
  const actionRoutes = Object.keys(doc.paths).filter((p) => /^\/api\/v1\/rollouts\/\{id\}\/(?!events$)[a-z]+$/.test(p));
  t.equal(actionRoutes.length, Object.keys(ACTIONS).length, 'no action route the model does not define');
  t.same(doc.paths['/api/v1/nodes']?.get?.security, [{ bearer: [] }], 'operator routes declare bearer auth');
  t.same(doc.paths['/health/live']?.get?.security, [], 'health routes are open');

  const cases: [ErrorCode, Promise<unknown>][] = [
    ['E_BAD_MESSAGE', api<NodeRegisteredBody>(op, 'POST', '/api/v1/nodes', { id: 'v0', extra: true })],
    ['E_AUTH', api<FleetBody>({ url: c.url! }, 'GET', '/api/v1/fleet')],
    ['E_FORBIDDEN', api<NodeRegisteredBody>({ url: c.url!, token: VIEW }, 'POST', '/api/v1/nodes', { id: 'v0' })],
    ['E_NOT_FOUND', api(op, 'GET', '/api/v1/rollouts/nope')],
    ['E_NOT_FOUND', api(op, 'GET', '/api/v1/nowhere')],
  ];
  for (const [code, p] of cases) {
    const e = await failure(p);
    t.equal(e.code, code);
    t.equal(e.status, httpStatusOf(code), `${code} answers ${httpStatusOf(code)} as the catalogue says`);
  }
  await api<NodeRegisteredBody>(op, 'POST', '/api/v1/nodes', { id: 'v0' });
  const conflict = await failure(api<NodeRegisteredBody>(op, 'POST', '/api/v1/nodes', { id: 'v0' }));
  t.equal(conflict.code, 'E_CONFLICT');
  t.equal(conflict.status, httpStatusOf('E_CONFLICT'));
  const events = await api<EventsBody>(op, 'GET', '/api/v1/events?after=0');
  t.same(
    events.events.map((e: { type: string }) => e.type),
    ['node.registered'],
    'the refused requests recorded nothing',
  );
});
