/**
 * One rule for every bearer token the product accepts (operators in the
 * coordinator's YAML or environment, an agent's token in its config or file):
 * short tokens are guessable, and the rule must not depend on where a token came from.
 */
export const MIN_TOKEN_LENGTH = 16;

/** Why `token` is unacceptable, or null. */
export function tokenProblem(token: string): string | null {
  if (token.length < MIN_TOKEN_LENGTH) return `must be at least ${MIN_TOKEN_LENGTH} characters (make one with: openssl rand -hex 32)`;
  if (/\s/.test(token)) return 'must not contain white space';
  return null;
}
