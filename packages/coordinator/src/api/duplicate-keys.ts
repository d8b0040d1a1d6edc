/**
 * Finds the first key named twice in one object of a JSON text. JSON.parse (and
 * fastify's own parser) silently keeps the last of two equal keys, so
 * `{"nodes":["v1"],"nodes":["v1","v2"]}` would do what a reviewer reading the
 * first one did not expect. The text must already be valid JSON (the caller
 * parses it first): the scan then only has to find where keys are, and keys are
 * compared decoded, so "a" and "\u0061" are the same key.
 *
 * A small scanner of our own rather than a package: the ones that do this are
 * unmaintained or bring a whole second parser, and this is one linear pass over
 * at most the body limit, with no recursion.
 */

interface Frame {
  /** The keys seen so far, or null for an array. */
  keys: Set<string> | null;
  /** In an object: the next string is a key (after `{` or `,`). */
  expectKey: boolean;
  /** Where this container sits, e.g. `body.target` or `body.nodes[2]`. */
  path: string;
  /** The last key read (object) or the index of the current element (array). */
  at: string | number;
}

export interface DuplicateKey {
  /** The field as the API's errors name fields, e.g. `body.options.soakMs`. */
  field: string;
  key: string;
}

export function firstDuplicateKey(text: string, root = 'body'): DuplicateKey | null {
  const stack: Frame[] = [];
  const childPath = () => {
    const top = stack.at(-1);
    if (!top) return root;
    return top.keys ? `${top.path}.${String(top.at)}` : `${top.path}[${String(top.at)}]`;
  };
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '{' || ch === '[') {
      stack.push({ keys: ch === '{' ? new Set() : null, expectKey: ch === '{', path: childPath(), at: ch === '{' ? '' : 0 });
    } else if (ch === '}' || ch === ']') {
      stack.pop();
    } else if (ch === ',') {
      const top = stack.at(-1);
      if (top?.keys) top.expectKey = true;
      else if (top) top.at = Number(top.at) + 1;
    } else if (ch === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === '\\' ? 2 : 1;
      const top = stack.at(-1);
      if (top?.keys && top.expectKey) {
        const key = JSON.parse(text.slice(i, end + 1)) as string;
        if (top.keys.has(key)) return { field: `${top.path}.${key}`, key };
        top.keys.add(key);
        top.at = key;
        top.expectKey = false;
      }
      i = end;
    }
    // Anything else (whitespace, ':', numbers, true, false, null) holds no key.
  }
  return null;
}
