import net from 'node:net';

/*
 * The load generator's HTTP/1.1 client: a fixed pool of keep-alive connections, one request in flight on each,
 * every request's bytes (request line, headers and body) built before the clock starts and written with one
 * call. On a 2-CPU machine the load generator shares the CPUs with the server it measures; undici spent about
 * 0.18 ms of CPU per join here (bench output "load generator"), CPU the server under test then lacked. This
 * client does only what the measurement needs: write the prepared bytes, frame the answer by its
 * Content-Length, and hand back the status and body. Anything else in an answer (chunked encoding, a closed
 * connection, no Content-Length) is an error the run reports, never a result.
 */

export interface HttpAnswer {
  readonly status: number;
  /** The status line and headers as received (latin1), for the few answers whose headers are checked. */
  readonly head: string;
  readonly body: Buffer;
}

/** A header's value in an answer's `head`, or undefined when it is absent. */
export function headerValue(head: string, name: string): string | undefined {
  const line = head.split('\r\n').find((l) => l.slice(0, name.length + 1).toLowerCase() === `${name.toLowerCase()}:`);
  return line?.slice(name.length + 1).trim();
}

/** A request's bytes, ready to write: `POST path HTTP/1.1`, headers, Content-Length and body. */
export function preparedPost(url: URL, headers: Readonly<Record<string, string>>, body: string): Buffer {
  const lines = [`POST ${url.pathname}${url.search} HTTP/1.1`, `host: ${url.host}`];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  lines.push(`content-length: ${Buffer.byteLength(body)}`, '', body);
  return Buffer.from(lines.join('\r\n'));
}

const HEADER_END = Buffer.from('\r\n\r\n');

/** One keep-alive connection carrying one request at a time. */
class Connection {
  readonly #socket: net.Socket;
  #chunks: Buffer[] = [];
  #pending: { resolve: (a: HttpAnswer) => void; reject: (e: Error) => void; since: number } | undefined;
  #dead: Error | undefined;

  constructor(url: URL) {
    this.#socket = net.connect({ host: url.hostname, port: Number(url.port || 80) });
    this.#socket.setNoDelay(true);
    this.#socket.on('data', (chunk: Buffer) => this.#received(chunk));
    this.#socket.on('error', (e) => this.#fail(e));
    this.#socket.on('close', () => this.#fail(new Error('connection closed by the server')));
  }

  get dead(): boolean {
    return this.#dead !== undefined;
  }

  send(request: Buffer): Promise<HttpAnswer> {
    if (this.#dead) return Promise.reject(this.#dead);
    return new Promise((resolve, reject) => {
      this.#pending = { resolve, reject, since: performance.now() };
      this.#socket.write(request);
    });
  }

  /** Ends a request that has waited longer than `timeoutMs`; the connection cannot be reused after that. */
  expireOlderThan(now: number, timeoutMs: number): void {
    if (this.#pending !== undefined && now - this.#pending.since > timeoutMs) this.#fail(new Error(`no answer within ${timeoutMs} ms`));
  }

  destroy(): void {
    this.#socket.destroy();
  }

  #received(chunk: Buffer): void {
    this.#chunks.push(chunk);
    const data = this.#chunks.length === 1 ? chunk : Buffer.concat(this.#chunks);
    const headerEnd = data.indexOf(HEADER_END);
    if (headerEnd < 0) return;
    const head = data.toString('latin1', 0, headerEnd);
    const status = Number(head.slice(9, 12));
    const length = contentLength(head);
    if (!(status >= 100) || length === undefined) return this.#fail(new Error(`unframed answer: ${JSON.stringify(head.slice(0, 200))}`));
    const bodyStart = headerEnd + HEADER_END.length;
    if (data.length < bodyStart + length) {
      this.#chunks = [data];
      return;
    }
    if (data.length > bodyStart + length) return this.#fail(new Error('bytes after the answer: the server sent more than was asked'));
    this.#chunks = [];
    const pending = this.#pending;
    this.#pending = undefined;
    pending?.resolve({ status, head, body: data.subarray(bodyStart) });
  }

  #fail(e: Error): void {
    this.#dead ??= e;
    const pending = this.#pending;
    this.#pending = undefined;
    pending?.reject(e);
    this.#socket.destroy();
  }
}

function contentLength(head: string): number | undefined {
  const at = head.search(/\r\ncontent-length:/i);
  if (at < 0) return undefined;
  const value = Number.parseInt(head.slice(at + 17, head.indexOf('\r\n', at + 2) >>> 0), 10);
  return Number.isSafeInteger(value) && value >= 0 ? value : undefined;
}

/** `size` keep-alive connections; a request takes an idle one (or waits for one) and gives it back when answered. */
export class KeepAlivePool {
  readonly #url: URL;
  readonly #idle: Connection[] = [];
  readonly #busy = new Set<Connection>();
  readonly #waiting: Array<(c: Connection) => void> = [];
  readonly #timer: NodeJS.Timeout;
  #closed = false;

  constructor(url: URL, size: number, timeoutMs: number) {
    if (url.protocol !== 'http:') throw new Error(`the load generator speaks plain HTTP only, not ${url.protocol}`);
    this.#url = url;
    for (let i = 0; i < size; i++) this.#idle.push(this.#open());
    // One timer for the whole pool instead of one per request.
    this.#timer = setInterval(() => {
      const now = performance.now();
      for (const c of this.#busy) c.expireOlderThan(now, timeoutMs);
    }, Math.max(10, Math.min(timeoutMs / 4, 250)));
  }

  async request(prepared: Buffer): Promise<HttpAnswer> {
    if (this.#closed) throw new Error('the keep-alive pool is closed');
    let c = this.#idle.pop() ?? (await new Promise<Connection>((resolve) => this.#waiting.push(resolve)));
    // A connection the server closed while it was idle is replaced, not counted as a failed request.
    if (c.dead) c = this.#open();
    this.#busy.add(c);
    try {
      return await c.send(prepared);
    } finally {
      this.#busy.delete(c);
      // After close(), an answer that was still on its way neither reopens nor keeps a connection.
      if (this.#closed) c.destroy();
      else this.#release(c.dead ? this.#open() : c);
    }
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
    for (const c of [...this.#idle, ...this.#busy]) c.destroy();
    this.#idle.length = 0;
  }

  #release(c: Connection): void {
    const waiter = this.#waiting.shift();
    if (waiter) waiter(c);
    else this.#idle.push(c);
  }

  #open(): Connection {
    return new Connection(this.#url);
  }
}
