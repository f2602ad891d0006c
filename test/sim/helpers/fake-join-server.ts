import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** A loopback HTTP server that records TS002 requests and answers each with `answer(request)`. */
export interface FakeJoinServer {
  readonly url: string;
  readonly requests: { headers: http.IncomingHttpHeaders; body: Record<string, unknown> }[];
  close(): Promise<void>;
}

export async function startFakeJoinServer(answer: (body: Record<string, unknown>) => { status?: number; body: unknown }): Promise<FakeJoinServer> {
  const requests: FakeJoinServer['requests'] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      requests.push({ headers: req.headers, body });
      const a = answer(body);
      res.writeHead(a.status ?? 200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(a.body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    requests,
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}
