import pino, { type Logger } from 'pino';

/** pino JSON lines; the daemon logs to stdout (the journal under systemd), the CLI to stderr. */
export function createLogger(level: string, toStderr: boolean): Logger {
  return pino({ level, base: { svc: 'guts-upgrade-agent' }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd: toStderr ? 2 : 1, sync: true }));
}
