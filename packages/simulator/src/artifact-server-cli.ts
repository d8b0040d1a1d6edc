#!/usr/bin/env node
/** CLI: artifact-server-cli <dir> [--host H] [--port P] */
import { parseArgs } from './config.js';
import { startArtifactServer } from './artifact-server.js';

const { flags, positionals } = parseArgs(process.argv.slice(2));
const dir = positionals[0];
if (!dir) {
  process.stderr.write('usage: artifact-server <dir> [--host 127.0.0.1] [--port 0]\n');
  process.exit(1);
}
const s = await startArtifactServer({
  dir,
  host: typeof flags.host === 'string' ? flags.host : '127.0.0.1',
  port: typeof flags.port === 'string' ? Number(flags.port) : 0,
});
process.stdout.write(`${JSON.stringify({ msg: 'artifact server listening', url: s.url })}\n`);
const stop = () => void s.close().then(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
