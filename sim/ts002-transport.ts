import http from 'node:http';
import https from 'node:https';

/*
 * TS002 transport (TS002-1.0 §20): HTTP/1.1 POST of one JSON message, answer in the response body
 * (synchronous mode). Persistent connections through the caller's keep-alive Agent.
 */

export interface Ts002Endpoint {
  readonly url: string;
  readonly token: string;
  /** A keep-alive agent shared by all requests of one peer; one is made when absent. */
  readonly agent?: http.Agent | undefined;
  readonly timeoutMs?: number | undefined;
}

export interface Ts002HttpResponse {
  readonly status: number;
  readonly contentType: string | undefined;
  /** Parsed body, or undefined when it is empty or not JSON. */
  readonly json: unknown;
  readonly text: string;
}

export class TransportError extends Error {
  override readonly name = 'TransportError';
}

const defaultAgents = new Map<string, http.Agent>();

function agentFor(url: URL): http.Agent {
  const key = url.protocol;
  let a = defaultAgents.get(key);
  if (!a) {
    a = url.protocol === 'https:' ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });
    defaultAgents.set(key, a);
  }
  return a;
}

export function postTs002(endpoint: Ts002Endpoint, message: object): Promise<Ts002HttpResponse> {
  const url = new URL(endpoint.url);
  const body = Buffer.from(JSON.stringify(message));
  const request = url.protocol === 'https:' ? https.request : http.request;
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        agent: endpoint.agent ?? agentFor(url),
        headers: {
          // The Things Stack matches exactly "application/json" (spec-notes §4.4), so that is what peers send.
          'Content-Type': 'application/json',
          'Content-Length': body.length,
          Authorization: `Bearer ${endpoint.token}`,
        },
        timeout: endpoint.timeoutMs ?? 10_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          resolve(ts002HttpResponse(res.statusCode ?? 0, res.headers['content-type'], Buffer.concat(chunks).toString('utf8')));
        });
      },
    );
    req.on('timeout', () => req.destroy(new TransportError(`no answer from ${url.host} within ${endpoint.timeoutMs ?? 10_000} ms`)));
    req.on('error', (e) => reject(e instanceof TransportError ? e : new TransportError(`${url.host}: ${e.message}`, { cause: e })));
    req.end(body);
  });
}

/** An answer as a TS002 client reads it, whoever carried it: `json` is undefined when the body is empty or not JSON. */
export function ts002HttpResponse(status: number, contentType: string | undefined, text: string): Ts002HttpResponse {
  let json: unknown;
  try {
    json = text === '' ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status, contentType, json, text };
}
