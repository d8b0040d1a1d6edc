/**
 * Image references a release may name: `host[:port]/name@sha256:<64 hex>`,
 * and nothing looser. A digest names one image for good; a tag is a pointer
 * the registry's owner can move after the release keys signed it, so a signed
 * tag would sign nothing. The registry host is required so that no engine
 * default (Docker Hub, a mirror) decides where the image comes from.
 *
 * The release tool checks what it signs with this, and the agent checks what
 * it reads from signed metadata with the same rules; each wraps the reason in
 * its own code.
 */

export interface ImageRef {
  /** The reference as given. */
  ref: string;
  /** host or host:port */
  registry: string;
  /** registry/name: how the engine lists it in an image's RepoDigests, before the `@`. */
  repository: string;
  /** sha256:<64 hex> */
  digest: string;
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;
const LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?';
const HOST = new RegExp(`^${LABEL}(?:\\.${LABEL})*(?::[0-9]{1,5})?$`);
/** One path component as the distribution reference grammar allows it. */
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const FORM = 'host[:port]/name@sha256:<64 hex>';

/** Reads a digest reference; throws an Error whose message says why it is not one and names the expected form. */
export function parseImageRef(ref: string): ImageRef {
  const bad = (why: string) => new Error(`${JSON.stringify(ref)} ${why}; give ${FORM}`);
  if (ref.length === 0 || ref.length > 512 || /\s/.test(ref)) throw bad('is not an image reference');
  const at = ref.indexOf('@');
  const name = at < 0 ? ref : ref.slice(0, at);
  const slash = name.indexOf('/');
  const last = name.slice(name.lastIndexOf('/') + 1);
  if (at < 0) throw bad(last.includes(':') ? 'names no digest (a tag, which the registry can move)' : 'names no digest');
  const digest = ref.slice(at + 1);
  if (!DIGEST.test(digest)) throw bad(`has digest ${JSON.stringify(digest)}: it must be sha256: and 64 lowercase hex digits`);
  if (last.includes(':')) throw bad('carries a tag beside its digest');
  const host = slash < 0 ? '' : name.slice(0, slash);
  // The engine's own rule: a first component is a registry only with a dot, a port, or as localhost.
  if (slash < 0 || !(host.includes('.') || host.includes(':') || host === 'localhost') || !HOST.test(host)) {
    throw bad('names no registry host');
  }
  const path = name.slice(slash + 1);
  if (!path.split('/').every((c) => COMPONENT.test(c))) throw bad(`is not an image name: ${JSON.stringify(path)} is not a lowercase repository path`);
  return { ref, registry: host, repository: name, digest };
}
