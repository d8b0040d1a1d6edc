import t from 'tap';
import { firstDuplicateKey } from '../src/api/duplicate-keys.js';

t.test('finds a key given twice in one object, naming the field', async (t) => {
  t.same(firstDuplicateKey('{"a":1,"a":2}'), { field: 'body.a', key: 'a' });
  t.same(firstDuplicateKey('{"target":{"version":"1.1.0","url":"x","version":"9.0.0"}}'), { field: 'body.target.version', key: 'version' });
  t.same(firstDuplicateKey('{"nodes":[{"x":1},{"y":2,"y":3}]}'), { field: 'body.nodes[1].y', key: 'y' });
  t.same(firstDuplicateKey('{"a":1,"\\u0061":2}'), { field: 'body.a', key: 'a' }, 'keys are compared decoded');
  t.same(firstDuplicateKey('{"a\\"b":1, "a\\"b" :2}'), { field: 'body.a"b', key: 'a"b' }, 'escaped quotes inside a key');
  t.same(firstDuplicateKey(' { "__proto__" : 1 , "__proto__" : 2 } '), { field: 'body.__proto__', key: '__proto__' });
});

t.test('equal keys in different objects, keys inside strings and arrays of equal values are fine', async (t) => {
  for (const text of [
    '{}',
    '[]',
    '"a"',
    '{"a":{"a":{"a":1}}}',
    '[{"a":1},{"a":1}]',
    '{"a":"\\"a\\":1","b":"{\\"a\\":1,\\"a\\":2}"}',
    '{"a":["a","a"],"b":[1,1,true,null]}',
    '{"a\\\\":1,"a":2}',
    '{"x":[[{"k":1}],[{"k":2}]],"k":3}',
  ]) {
    JSON.parse(text); // the scanner is only given valid JSON
    t.equal(firstDuplicateKey(text), null, text);
  }
});
