#!/usr/bin/env node
/**
 * guts-upgrade-coordinator: the coordinator daemon (`run`, the default command) and
 * `config validate`. Settings come from the YAML file, then the environment
 * (GUTS_UPGRADE_CONFIG, GUTS_UPGRADE_HOST, GUTS_UPGRADE_PORT, GUTS_UPGRADE_SOCKET,
 * GUTS_UPGRADE_DB, GUTS_UPGRADE_LOG_LEVEL, GUTS_UPGRADE_OPERATOR_TOKEN), then flags.
 *
 * Exit codes: 0 clean stop / config valid; 1 runtime failure; 2 usage or invalid config
 * (the unit's RestartPreventExitStatus=2: restarting cannot fix a bad config).
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { CodedError } from '@guts-upgrade/protocol';
import { loadConfig, type Config } from './config.js';
import { startCoordinator } from './server.js';
import { PRODUCT_VERSION } from './version.js';

export const EXIT = { OK: 0, FAILED: 1, USAGE: 2 } as const;

interface ConfigFlags {
  config?: string;
  host?: string;
  port?: string;
  socket?: string;
  db?: string;
  logLevel?: string;
}

export interface ServerIo {
  env: NodeJS.ProcessEnv;
  out(s: string): void;
  err(s: string): void;
}

/**
 * The whole configuration as the daemon would run it, refused with E_CONFIG where it
 * could not serve anyone: a coordinator with no operator token accepts no rollout.
 */
export function startableConfig(flags: ConfigFlags, env: NodeJS.ProcessEnv): Config {
  const config = loadConfig(flags.config ?? env.GUTS_UPGRADE_CONFIG, env, {
    host: flags.host,
    port: flags.port,
    socket: flags.socket,
    db: flags.db,
    'log-level': flags.logLevel,
  });
  if (!config.operators.some((o) => o.role === 'operator')) {
    throw new CodedError(
      'E_CONFIG',
      'config operators: no operator token is configured, so nobody could start or stop a rollout; add an entry with role operator under operators, or set GUTS_UPGRADE_OPERATOR_TOKEN',
      { key: 'operators' },
    );
  }
  return config;
}

function withConfigFlags(cmd: Command): Command {
  return cmd
    .option('--config <file>', 'YAML configuration (env GUTS_UPGRADE_CONFIG)')
    .option('--host <host>', 'listen address (env GUTS_UPGRADE_HOST)')
    .option('--port <port>', 'listen port (env GUTS_UPGRADE_PORT)')
    .option('--socket <path>', 'also listen on this unix socket (env GUTS_UPGRADE_SOCKET)')
    .option('--db <file>', 'the SQLite database (env GUTS_UPGRADE_DB)')
    .option('--log-level <level>', 'pino level (env GUTS_UPGRADE_LOG_LEVEL)');
}

async function run(flags: ConfigFlags, io: ServerIo): Promise<number> {
  const running = await startCoordinator(startableConfig(flags, io.env));
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      running.coordinator.log.info({ signal }, 'stopping');
      void running.close().then(resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  return EXIT.OK;
}

export function buildProgram(io: ServerIo, result: { code: number }): Command {
  const program = new Command('guts-upgrade-coordinator')
    .description("The guts-upgrade coordinator: sequences guts-node rollouts across the validators' agents.")
    .version(PRODUCT_VERSION, '-V, --version', 'print the guts-upgrade version')
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .exitOverride();
  withConfigFlags(program.command('run', { isDefault: true }).description('run the coordinator (the default command)')).action(async (o: ConfigFlags) => {
    result.code = await run(o, io);
  });
  const config = program.command('config').description('check a configuration without starting anything');
  withConfigFlags(config.command('validate').description('load and check the configuration as `run` would; exit 0 if valid, 2 if not')).action(
    (o: ConfigFlags) => {
      const c = startableConfig(o, io.env);
      io.out(
        `configuration valid: listen ${c.listen.socket ? `unix:${c.listen.socket} ` : ''}${c.listen.port !== null ? `${c.listen.host}:${c.listen.port}` : ''}` +
          `${c.tls ? ' (TLS)' : ''}, db ${c.db}, ${c.operators.length} token(s), ${c.windows.length} window(s), ${c.webhooks.length} webhook(s)\n`,
      );
    },
  );
  return program;
}

export async function main(argv: string[], io: ServerIo): Promise<number> {
  const result = { code: EXIT.OK as number };
  try {
    await buildProgram(io, result).parseAsync(argv, { from: 'user' });
    return result.code;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
    if (err instanceof CodedError && err.code === 'E_CONFIG') {
      io.err(`${err.message}\n`);
      return EXIT.USAGE;
    }
    io.err(`${err instanceof CodedError ? err.message : (err as Error).stack}\n`);
    return EXIT.FAILED;
  }
}

const isMain = process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  main(process.argv.slice(2), { env: process.env, out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) }).then((code) =>
    process.exit(code),
  );
}
