import pino, { type Logger } from 'pino';

export type { Logger };

/*
 * Structured logs (JSON lines). Keys never reach a log call by design (custody returns none); the redaction
 * list is the second line of defence for anything that carries key envelopes or credentials.
 */
export const redactedPaths = [
  'AESKey',
  '*.AESKey',
  '*.*.AESKey',
  'AppSKey',
  'NwkSKey',
  'FNwkSIntKey',
  'SNwkSIntKey',
  'NwkSEncKey',
  '*.AppSKey',
  '*.NwkSKey',
  '*.FNwkSIntKey',
  '*.SNwkSIntKey',
  '*.NwkSEncKey',
  'appKey',
  'nwkKey',
  '*.appKey',
  '*.nwkKey',
  'key',
  '*.key',
  'token',
  '*.token',
  'authorization',
  'headers.authorization',
  'req.headers.authorization',
  'masterKey',
];

export function createLogger(options: { level?: string; destination?: pino.DestinationStream } = {}): Logger {
  return pino(
    {
      level: options.level ?? process.env['JOINKEEP_LOG_LEVEL'] ?? 'info',
      base: { service: 'joinkeep' },
      redact: { paths: redactedPaths, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    options.destination ?? bufferedStdout(),
  );
}

/**
 * Standard output, written in chunks of at least 4 KiB (or every 200 ms) instead of one write(2) per line: at a few
 * thousand requests/s a syscall per request-summary line cost several per cent of the event loop. Lines still
 * buffered are written synchronously when the process exits (pino's exit hook).
 */
function bufferedStdout(): pino.DestinationStream {
  return pino.destination({ dest: 1, sync: false, minLength: 4096, periodicFlush: 200 } as Parameters<typeof pino.destination>[0]);
}
