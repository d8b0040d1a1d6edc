#!/usr/bin/env node
/**
 * guts-upgrade-coordinator [--config FILE] [--host H] [--port P] [--socket PATH] [--db FILE] [--log-level L]
 * Env: GUTS_UPGRADE_CONFIG, GUTS_UPGRADE_HOST, GUTS_UPGRADE_PORT, GUTS_UPGRADE_SOCKET, GUTS_UPGRADE_DB,
 *      GUTS_UPGRADE_LOG_LEVEL, GUTS_UPGRADE_OPERATOR_TOKEN.
 * Exit codes: 0 clean stop, 2 usage or invalid config, 1 runtime failure.
 */
import { CodedError } from '@guts-upgrade/protocol';
import { loadConfig } from './config.js';
import { startCoordinator } from './server.js';

const FLAGS = ['config', 'host', 'port', 'socket', 'db', 'log-level'];

function parseFlags(argv: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') {
      process.stdout.write('usage: guts-upgrade-coordinator [--config FILE] [--host H] [--port P] [--socket PATH] [--db FILE] [--log-level L]\n');
      process.exit(0);
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m || !FLAGS.includes(m[1]!)) {
      process.stderr.write(`unknown argument ${a}\n`);
      process.exit(2);
    }
    const v = m[2] ?? argv[++i];
    if (v === undefined) {
      process.stderr.write(`--${m[1]} needs a value\n`);
      process.exit(2);
    }
    out[m[1]!] = v;
  }
  return out;
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2));
  let config;
  try {
    config = loadConfig(flags.config ?? process.env.GUTS_UPGRADE_CONFIG, process.env, flags);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(2);
  }
  const running = await startCoordinator(config);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    running.coordinator.log.info({ signal }, 'stopping');
    await running.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

main().catch((err) => {
  process.stderr.write(`${err instanceof CodedError ? err.message : (err as Error).stack}\n`);
  process.exit(1);
});
