import assert from 'node:assert/strict';
import http from 'node:http';
import net, { type AddressInfo, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { KeepAlivePool, headerValue, preparedPost } from '../../bench/keep-alive-pool.js';

/*
 * The load generator's HTTP client against a real node:http server: every answer must reach the request that asked
 * for it, whole, however the server's bytes are split; anything it cannot frame is an error, never a result.
 */

type Behaviour = (req: http.IncomingMessage, body: string, res: http.ServerResponse) => void;

describe('bench / keep-alive pool', () => {
  let server: http.Server;
  let url: URL;
  let behaviour: Behaviour;
  const connections = new Set<Socket>();
  let connectionsOpened = 0;

  before(async () => {
    server = http.createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (body += c));
      req.on('end', () => behaviour(req, body, res));
    });
    server.keepAliveTimeout = 60_000;
    server.on('connection', (s: Socket) => {
      connectionsOpened++;
      connections.add(s);
      s.on('close', () => connections.delete(s));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/path?q=1`);
  });
  after(async () => {
    for (const s of connections) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const echo: Behaviour = (req, body, res) => {
    const answer = JSON.stringify({ url: req.url, method: req.method, auth: req.headers.authorization, body });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(answer) }).end(answer);
  };

  it('sends the prepared request as written and returns each answer to the request that asked for it', async () => {
    behaviour = echo;
    const pool = new KeepAlivePool(url, 4, 5_000);
    try {
      const bodies = Array.from({ length: 200 }, (_, i) => JSON.stringify({ i, pad: 'é'.repeat(i % 7) }));
      const answers = await Promise.all(bodies.map((b) => pool.request(preparedPost(url, { authorization: 'Bearer t', 'content-type': 'application/json' }, b))));
      answers.forEach((a, i) => {
        assert.equal(a.status, 200);
        assert.deepEqual(JSON.parse(a.body.toString()), { url: '/path?q=1', method: 'POST', auth: 'Bearer t', body: bodies[i] });
        // The head as received, for the answers whose headers are checked (the NS simulator reads Content-Type).
        assert.match(a.head, /^HTTP\/1\.1 200 /);
        assert.equal(headerValue(a.head, 'Content-Type'), 'application/json');
        assert.equal(headerValue(a.head, 'x-absent'), undefined);
      });
    } finally {
      pool.close();
    }
  });

  it('keeps its connections open: 300 requests over 3 connections open 3', async () => {
    behaviour = echo;
    const before = connectionsOpened;
    const pool = new KeepAlivePool(url, 3, 5_000);
    try {
      for (let round = 0; round < 100; round++) await Promise.all([1, 2, 3].map((i) => pool.request(preparedPost(url, {}, String(i)))));
      assert.equal(connectionsOpened - before, 3);
    } finally {
      pool.close();
    }
  });

  it('puts together an answer that arrives in pieces, head and body split anywhere', async () => {
    // A raw server, so the answer's head can be split too: node:http writes its head in one piece.
    const answer = JSON.stringify({ ok: 'x'.repeat(3000) });
    const bytes = Buffer.from(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(answer)}\r\n\r\n${answer}`);
    const cuts = [5, 20, 40, 70, 90, 1000, bytes.length];
    const raw = net.createServer((socket) => {
      let received = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        received = Buffer.concat([received, chunk]);
        const headEnd = received.indexOf('\r\n\r\n');
        if (headEnd < 0) return;
        const length = Number(/content-length: (\d+)/i.exec(received.toString('latin1', 0, headEnd))![1]);
        if (received.length < headEnd + 4 + length) return;
        received = received.subarray(headEnd + 4 + length);
        // Flushed piece by piece with pauses, so the client's socket sees them as separate reads.
        let from = 0;
        const next = (k: number): void => {
          if (k === cuts.length) return;
          socket.write(bytes.subarray(from, cuts[k]));
          from = cuts[k]!;
          setTimeout(() => next(k + 1), 5);
        };
        next(0);
      });
    });
    await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve));
    const rawUrl = new URL(`http://127.0.0.1:${(raw.address() as AddressInfo).port}/`);
    const pool = new KeepAlivePool(rawUrl, 1, 5_000);
    try {
      for (let i = 0; i < 3; i++) {
        const a = await pool.request(preparedPost(rawUrl, {}, '{}'));
        assert.equal(a.status, 200);
        assert.equal(a.body.toString(), answer);
      }
    } finally {
      pool.close();
      await new Promise<void>((resolve) => raw.close(() => resolve()));
    }
  });

  it('refuses an answer without Content-Length (chunked) instead of guessing where it ends', async () => {
    behaviour = (_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"a":');
      res.end('1}');
    };
    const pool = new KeepAlivePool(url, 1, 5_000);
    try {
      await assert.rejects(pool.request(preparedPost(url, {}, '{}')), /unframed answer/);
    } finally {
      pool.close();
    }
  });

  it('reports a connection the server closes before answering, and goes on with a new one', async () => {
    let calls = 0;
    behaviour = (req, body, res) => (++calls === 1 ? req.socket.destroy() : echo(req, body, res));
    const pool = new KeepAlivePool(url, 1, 5_000);
    try {
      await assert.rejects(pool.request(preparedPost(url, {}, 'first')), /connection closed by the server/);
      const a = await pool.request(preparedPost(url, {}, 'second'));
      assert.equal(JSON.parse(a.body.toString()).body, 'second');
    } finally {
      pool.close();
    }
  });

  it('replaces a connection the server closed while it was idle, without failing a request', async () => {
    behaviour = echo;
    const pool = new KeepAlivePool(url, 1, 5_000);
    try {
      await pool.request(preparedPost(url, {}, 'one'));
      for (const s of connections) s.destroy();
      await new Promise((resolve) => setTimeout(resolve, 50));
      const a = await pool.request(preparedPost(url, {}, 'two'));
      assert.equal(JSON.parse(a.body.toString()).body, 'two');
    } finally {
      pool.close();
    }
  });

  it('once closed, opens no connection again and refuses new requests', async () => {
    behaviour = (req, body, res) => setTimeout(() => echo(req, body, res), 100);
    const pool = new KeepAlivePool(url, 2, 5_000);
    const inFlight = pool.request(preparedPost(url, {}, 'late'));
    await new Promise((resolve) => setTimeout(resolve, 20));
    const opened = connectionsOpened;
    pool.close();
    await assert.rejects(inFlight, /connection closed/);
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.equal(connectionsOpened, opened, 'no connection opened after close()');
    await assert.rejects(pool.request(preparedPost(url, {}, 'after')), /closed/);
  });

  it('ends a request that gets no answer within the timeout', async () => {
    behaviour = () => undefined;
    const pool = new KeepAlivePool(url, 1, 100);
    try {
      const started = performance.now();
      await assert.rejects(pool.request(preparedPost(url, {}, '{}')), /no answer within 100 ms/);
      assert.ok(performance.now() - started >= 100);
    } finally {
      pool.close();
    }
  });
});
