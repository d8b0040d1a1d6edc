/**
 * Value checks shared by the product's command lines (the agent's and the operator's,
 * which may not import each other). Each returns the parsed value or throws an Error
 * whose message says what the value must be; each CLI turns that into its usage error.
 */
export function nonNegativeIntArg(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n)) throw new Error('must be a non-negative integer');
  return n;
}

export function positiveIntArg(v: string): number {
  const n = nonNegativeIntArg(v);
  if (n === 0) throw new Error('must be a positive integer');
  return n;
}

export function sha256Arg(v: string): string {
  if (!/^[0-9a-fA-F]{64}$/.test(v)) throw new Error("must be 64 hex characters (the artifact's sha256)");
  return v.toLowerCase();
}

export function pubkeyArg(v: string): string {
  if (!/^[0-9a-fA-F]{2,256}$/.test(v) || v.length % 2 !== 0) throw new Error("must be the validator's public key in hex");
  return v.toLowerCase();
}

export function httpUrlArg(v: string): string {
  if (!/^https?:\/\/\S+$/.test(v)) throw new Error('must be an http(s) URL');
  return v;
}

/** A check as a command-line parser's argument parser, its reason rethrown as that parser's usage error. */
export function asArgParser<T>(check: (v: string) => T, usageError: new (message: string) => Error): (v: string) => T {
  return (v) => {
    try {
      return check(v);
    } catch (err) {
      throw new usageError((err as Error).message);
    }
  };
}
