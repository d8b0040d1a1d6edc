/**
 * Entry point shared by the `guts-node` bin and every artifact launcher; the
 * launcher passes its baked-in build identity.
 */
import { ConfigError, parseArgs, resolveConfig, DEFAULT_TIMINGS } from './config.js';
import { Logger, isLogLevel } from './log.js';
import { EXIT_SCHEMA, runNode } from './node.js';
import { initDataDir, readSchema, StorageError, verifyDataDir, writeSchema } from './storage.js';
import { type BuildIdentity, DEFAULT_IDENTITY, parseVersion, runtimeVersion, schemaForVersion, schemaMajor } from './version.js';

const USAGE = `Usage: guts-node [OPTIONS] [COMMAND]

Options:
  -c, --config <PATH>        config file (YAML) [default: config.yaml]
      --api-addr <ADDR>      [env: GUTS_API_ADDR] [default: 127.0.0.1:8080]
      --p2p-addr <ADDR>      [env: GUTS_P2P_ADDR] [default: 0.0.0.0:9000]
      --metrics-addr <ADDR>  [env: GUTS_METRICS_ADDR] [default: 0.0.0.0:9090]
      --data-dir <DIR>       [env: GUTS_DATA_DIR] [default: ./data]
      --log-level <LEVEL>    [env: GUTS_LOG_LEVEL] [default: info]
      --log-format <FORMAT>  json|pretty [env: GUTS_LOG_FORMAT] [default: json]
  -V, --version
  -h, --help

Simulator commands:
  migrate --from A --to B --data-dir D   offline major storage migration
  verify --data-dir D [--full]           data dir integrity check
  init --data-dir D [--size-mb N]        create a data dir with N MB of data
`;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function need(flags: Record<string, string | true>, name: string): string {
  const v = flags[name];
  if (typeof v !== 'string' || v === '') throw new ConfigError(`--${name} is required`);
  return v;
}

function dataDirOf(flags: Record<string, string | true>): string {
  const v = flags['data-dir'];
  if (typeof v === 'string' && v) return v;
  if (process.env.GUTS_DATA_DIR) return process.env.GUTS_DATA_DIR;
  throw new ConfigError('--data-dir is required');
}

async function migrate(flags: Record<string, string | true>, id: BuildIdentity, log: Logger): Promise<number> {
  const from = need(flags, 'from');
  const to = need(flags, 'to');
  const dataDir = dataDirOf(flags);
  const fromSchema = schemaForVersion(from);
  const toSchema = schemaForVersion(to);
  const info = readSchema(dataDir);
  if (!info) {
    log.error('no schema.json in data dir; nothing to migrate', { data_dir: dataDir });
    return 1;
  }
  if (info.schema === toSchema) {
    log.info('storage already at target schema', { schema: toSchema });
    return 0;
  }
  if (toSchema < info.schema) {
    log.error('refusing to migrate storage backwards', { data_schema: info.schema, to_schema: toSchema });
    return 1;
  }
  if (schemaMajor(info.schema) !== parseVersion(from).major) {
    log.error(`data schema ${info.schema} does not belong to --from ${from}`, { data_schema: info.schema, from_schema: fromSchema });
    return 1;
  }
  if (parseVersion(to).major - schemaMajor(info.schema) > 1) {
    log.error('migrate one major version at a time', { from, to });
    return 1;
  }
  const envMs = Number(process.env.GUTS_SIM_MIGRATE_MS);
  const ms =
    typeof flags['migrate-ms'] === 'string'
      ? Number(flags['migrate-ms'])
      : Number.isFinite(envMs) && process.env.GUTS_SIM_MIGRATE_MS
        ? envMs
        : DEFAULT_TIMINGS.migrate_ms;
  log.info('migrating storage schema', {
    from: info.schema,
    to: toSchema,
    from_version: from,
    to_version: to,
    data_dir: dataDir,
    binary_version: runtimeVersion(id),
  });
  const steps = 4;
  for (let i = 1; i <= steps; i++) {
    await sleep(ms / steps);
    log.info('migration progress', { percent: Math.round((i / steps) * 100) });
  }
  writeSchema(dataDir, toSchema, to, info.schema);
  log.info('storage schema migrated', { from: info.schema, to: toSchema });
  return 0;
}

export async function main(argv: string[], identity: BuildIdentity = DEFAULT_IDENTITY): Promise<void> {
  const log = new Logger();
  let code = 0;
  try {
    const args = parseArgs(argv);
    const f = args.flags;
    const lvl = typeof f['log-level'] === 'string' ? f['log-level'] : process.env.GUTS_LOG_LEVEL;
    const fmt = (typeof f['log-format'] === 'string' ? f['log-format'] : process.env.GUTS_LOG_FORMAT) === 'pretty' ? 'pretty' : 'json';
    log.setup(lvl && isLogLevel(lvl) ? lvl : 'info', fmt);
    if (f.version) {
      process.stdout.write(`guts-node ${identity.version}\n`);
      return;
    }
    if (f.help) {
      process.stdout.write(USAGE);
      return;
    }
    const cmd = args.positionals[0];
    switch (cmd) {
      case undefined: {
        const cfg = resolveConfig(args);
        await runNode(cfg, identity, log);
        return; // keeps running on its servers
      }
      case 'migrate':
        code = await migrate(f, identity, log);
        break;
      case 'verify': {
        const dataDir = dataDirOf(f);
        const r = verifyDataDir(dataDir, f.full === true);
        if (r.ok) log.info('data dir verified', { data_dir: dataDir, schema: r.schema, full: f.full === true, files_checked: r.checked });
        else {
          log.error('data dir verification failed', { data_dir: dataDir, problems: r.problems });
          process.stderr.write(`verify failed: ${r.problems.join('; ')}\n`);
          code = 1;
        }
        break;
      }
      case 'init': {
        const dataDir = dataDirOf(f);
        const sizeMb = typeof f['size-mb'] === 'string' ? Number(f['size-mb']) : 0;
        if (!Number.isFinite(sizeMb) || sizeMb < 0) throw new ConfigError('--size-mb must be a non-negative number');
        const version = typeof f['schema-version'] === 'string' ? f['schema-version'] : runtimeVersion(identity);
        const r = initDataDir(dataDir, { sizeMb, version });
        log.info('data dir initialized', { data_dir: dataDir, ...r });
        break;
      }
      default:
        throw new ConfigError(`unknown command ${JSON.stringify(cmd)}\n\n${USAGE}`);
    }
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`error: ${e.message}\n`);
      code = 1;
    } else if (e instanceof StorageError) {
      log.error(e.message);
      code = EXIT_SCHEMA;
    } else {
      log.error('fatal', { error: (e as Error).stack ?? String(e) });
      code = 1;
    }
  }
  process.exitCode = code;
}
