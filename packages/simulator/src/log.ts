/** JSON-lines logger on stdout (pretty optional), like the real node's tracing output. */

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<LogLevel, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50 };

export function isLogLevel(s: string): s is LogLevel {
  return s in ORDER;
}

export class Logger {
  constructor(
    private level: LogLevel = 'info',
    private format: 'json' | 'pretty' = 'json',
    private base: Record<string, unknown> = {},
  ) {}

  setup(level: LogLevel, format: 'json' | 'pretty', base: Record<string, unknown> = {}): void {
    this.level = level;
    this.format = format;
    this.base = { ...this.base, ...base };
  }

  log(level: LogLevel, msg: string, fields: Record<string, unknown> = {}): void {
    if (ORDER[level] < ORDER[this.level]) return;
    const time = new Date().toISOString();
    if (this.format === 'pretty') {
      const kv = Object.entries({ ...this.base, ...fields })
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(' ');
      process.stdout.write(`${time} ${level.toUpperCase().padEnd(5)} ${msg}${kv ? ` ${kv}` : ''}\n`);
    } else {
      process.stdout.write(`${JSON.stringify({ time, level, msg, ...this.base, ...fields })}\n`);
    }
  }

  debug(msg: string, f?: Record<string, unknown>): void {
    this.log('debug', msg, f);
  }
  info(msg: string, f?: Record<string, unknown>): void {
    this.log('info', msg, f);
  }
  warn(msg: string, f?: Record<string, unknown>): void {
    this.log('warn', msg, f);
  }
  error(msg: string, f?: Record<string, unknown>): void {
    this.log('error', msg, f);
  }
}
