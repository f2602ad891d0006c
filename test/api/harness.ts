import type { FastifyInstance } from 'fastify';
import { createApiServer } from '../../src/api/server.js';
import { type Joinkeep, openJoinkeep } from '../../src/app/joinkeep.js';
import { createLogger } from '../../src/observability/logger.js';
import { cliJson, cliOk, tempRoot } from '../helpers/cli-run.js';

/*
 * A real installation for REST API tests: a data directory made by `joinkeep init` (SQLite file, software keystore),
 * opened with the app's own opener, the API listening on 127.0.0.1:0 over real HTTP. Keys are made by the CLI as an
 * operator would. `served` collects every route the server registered (method, URL) as Fastify reports it.
 */

export interface ApiHarness {
  readonly api: string;
  readonly dd: readonly string[];
  readonly joinkeep: Joinkeep;
  readonly served: { method: string; url: string }[];
  readonly app: FastifyInstance;
  call(method: string, path: string, key?: string, body?: unknown, headers?: Record<string, string>): Promise<Answer>;
  close(): Promise<void>;
}

export interface Answer {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  readonly json: any;
}

export async function startApi(): Promise<ApiHarness> {
  const root = await tempRoot('joinkeep-api-');
  const dd = ['--data-dir', root.dataDir];
  await cliOk(['init', ...dd]);
  const joinkeep = await openJoinkeep(root.dataDir, { logger: createLogger({ level: 'silent' }) });
  const app = createApiServer({ storage: joinkeep.storage, custody: joinkeep.custody, logger: joinkeep.logger, batchBodyLimit: 1 << 20 });
  const served: { method: string; url: string }[] = [];
  app.addHook('onRoute', (r) => {
    for (const method of [r.method].flat()) served.push({ method: String(method), url: r.url });
  });
  const base = await app.listen({ host: '127.0.0.1', port: 0 });
  const api = `${base}/api/v1`;
  return {
    api,
    dd,
    joinkeep,
    served,
    app,
    async call(method, path, key, body, headers = {}) {
      const r = await fetch(`${api}${path}`, {
        method,
        headers: { ...(key === undefined ? {} : { authorization: `Bearer ${key}` }), ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const text = await r.text();
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      return { status: r.status, headers: r.headers, text, json };
    },
    async close() {
      await app.close();
      await joinkeep.close();
      await root.cleanup();
    },
  };
}

/** An operator key (scope admin), made with the CLI on the data directory while the server runs. */
export async function operatorKey(h: ApiHarness, scopes = ['admin']): Promise<string> {
  const r = await cliJson<{ key: string }>(['api-key', 'create', ...h.dd, '--operator', '--name', 'test operator', '--scope', ...scopes]);
  return r.key;
}
