import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { UsageError } from './context.js';

/*
 * The CLI as a client of a (remote) Joinkeep REST API, for the commands an organisation runs itself: claim, bind,
 * transfer, devices. The server comes from --server or JOINKEEP_SERVER; the API key from --api-key-file or
 * JOINKEEP_API_KEY — never from the command line, where other users of the machine can read it.
 */

export const SERVER_ENV = 'JOINKEEP_SERVER';
export const API_KEY_ENV = 'JOINKEEP_API_KEY';

export interface RemoteOptions {
  readonly server?: string;
  readonly apiKeyFile?: string;
}

/** A problem+json answer of the API, shown as its detail; exit 1 like any other refusal. */
export class RemoteError extends Error {
  override readonly name = 'RemoteError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly body: unknown,
  ) {
    super(message);
  }
}

export function addRemoteOptions(command: Command): Command {
  return command
    .option('--server <url>', `Joinkeep REST API base URL, e.g. https://js.example.com (or ${SERVER_ENV})`)
    .option('--api-key-file <file>', `file holding the organisation's API key (or ${API_KEY_ENV})`);
}

export interface RemoteApi {
  request<T>(method: string, path: string, body?: unknown): Promise<T>;
}

export async function remoteApi(o: RemoteOptions): Promise<RemoteApi> {
  const server = o.server ?? process.env[SERVER_ENV];
  if (!server) throw new UsageError(`give --server URL or set ${SERVER_ENV}`);
  let base: URL;
  try {
    base = new URL(server);
  } catch {
    throw new UsageError(`--server ${server} is not a URL`);
  }
  let key = process.env[API_KEY_ENV];
  if (o.apiKeyFile !== undefined) {
    key = (await readFile(o.apiKeyFile, 'utf8').catch(() => {
      throw new UsageError(`--api-key-file ${o.apiKeyFile} cannot be read`);
    })).trim();
  }
  if (!key) throw new UsageError(`give --api-key-file FILE or set ${API_KEY_ENV}`);
  const authorization = `Bearer ${key}`;
  return {
    async request<T>(method: string, path: string, body?: unknown): Promise<T> {
      const url = new URL(path.replace(/^\//, ''), base.href.endsWith('/') ? base : new URL(`${base.href}/`));
      let res: Response;
      try {
        res = await fetch(url, {
          method,
          headers: { authorization, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        });
      } catch (error) {
        throw new RemoteError(0, 'UNREACHABLE', `${base.host}: ${(error as Error).cause instanceof Error ? ((error as Error).cause as Error).message : (error as Error).message}`, undefined);
      }
      const text = await res.text();
      const json: unknown = text === '' ? undefined : safeJson(text);
      if (!res.ok) {
        const p = (json ?? {}) as { code?: string; detail?: string; title?: string };
        throw new RemoteError(res.status, p.code ?? `HTTP_${res.status}`, `${p.detail ?? p.title ?? `HTTP ${res.status}`} (${p.code ?? res.status})`, json);
      }
      return json as T;
    },
  };
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
