/**
 * Failures of the offline release tool. Their codes are the tool's own (they
 * never cross the wire, so they are not in the protocol's catalogue); each
 * message says what to do next. The CLI exits 1 on them; usage errors exit 2.
 */
export type ReleaseErrorCode = 'E_RELEASE_REPO' | 'E_RELEASE_KEYS' | 'E_RELEASE_USAGE';

export class ReleaseError extends Error {
  constructor(
    readonly code: ReleaseErrorCode,
    readonly detail: string,
  ) {
    super(`${code}: ${detail}`);
    this.name = 'ReleaseError';
  }
}
