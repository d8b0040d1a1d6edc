import { runCli } from '../src/cli.js';

/** The operator CLI in-process, with its standard output, standard error and exit code captured. */
export async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runCli(
    argv,
    {},
    (s) => (out += s),
    (s) => (err += s),
  );
  return { code, out, err };
}
