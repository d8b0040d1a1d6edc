/**
 * The live page at `/`: the HTML shell and its two assets, served by the
 * coordinator itself. Public like /health (the page holds no data); everything
 * it shows comes from /api/v1 with the token the operator types in. A strict
 * content security policy lets the page load only its own script and styles and
 * talk only to this origin.
 */
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import { PAGE_CSS, PAGE_HTML, PAGE_JS } from '../ui/page-assets.js';

export const PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

function asset(reply: FastifyReply, type: string, body: string) {
  return reply
    .header('content-type', `${type}; charset=utf-8`)
    .header('content-security-policy', PAGE_CSP)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('cache-control', 'no-store')
    .send(body);
}

export const pageRoutes: FastifyPluginAsync = async (app) => {
  const hide = { schema: { hide: true } };
  app.get('/', hide, async (_req, reply) => asset(reply, 'text/html', PAGE_HTML));
  app.get('/ui/app.js', hide, async (_req, reply) => asset(reply, 'text/javascript', PAGE_JS));
  app.get('/ui/app.css', hide, async (_req, reply) => asset(reply, 'text/css', PAGE_CSS));
};
