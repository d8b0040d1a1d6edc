import t from 'tap';
import { parseImageRef } from '../src/image-ref.js';

const D = `sha256:${'ab'.repeat(32)}`;

t.test('digest references with a registry host parse into their parts', async (t) => {
  t.same(parseImageRef(`127.0.0.1:5000/guts-node@${D}`), {
    ref: `127.0.0.1:5000/guts-node@${D}`,
    registry: '127.0.0.1:5000',
    repository: '127.0.0.1:5000/guts-node',
    digest: D,
  });
  t.equal(parseImageRef(`registry.example.com/guts/guts-node@${D}`).repository, 'registry.example.com/guts/guts-node');
  t.equal(parseImageRef(`localhost/guts-node@${D}`).registry, 'localhost');
  t.equal(parseImageRef(`docker.io/library/guts_node-x@${D}`).registry, 'docker.io');
});

t.test('anything else is refused with the reason', async (t) => {
  const cases: [string, RegExp][] = [
    ['127.0.0.1:5000/guts-node:1.0.1', /names no digest/],
    [`guts-node@${D}`, /names no registry host/],
    [`guts/guts-node@${D}`, /names no registry host/],
    [`127.0.0.1:5000/guts-node:1.0.1@${D}`, /tag beside its digest/],
    ['127.0.0.1:5000/guts-node@sha256:abc', /64 lowercase hex/],
    [`127.0.0.1:5000/guts-node@sha256:${'AB'.repeat(32)}`, /64 lowercase hex/],
    [`127.0.0.1:5000/guts-node@sha512:${'ab'.repeat(64)}`, /sha256:/],
    [`127.0.0.1:5000/Guts-Node@${D}`, /not an image name/],
    [`127.0.0.1:5000/@${D}`, /not an image name/],
    [`127.0.0.1:5000/guts node@${D}`, /not an image reference/],
    ['', /not an image reference/],
  ];
  for (const [ref, why] of cases) t.throws(() => parseImageRef(ref), { message: why }, JSON.stringify(ref));
});
