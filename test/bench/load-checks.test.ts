import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { aesKeyWrap } from '../../src/custody/primitives.js';
import { buildFleet } from '../../bench/fleet.js';
import { saveFleet } from '../../bench/fleet-file.js';
import { type LoadResult, runLoad } from '../../bench/load.js';
import { type Provisioned, provision } from '../../bench/provision.js';
import { type RunningServer, startServer } from '../../sim/joinkeep-server.js';

/*
 * The load generator checks the accepts of every verifyEvery-th device after the clock stops (bench/load-process.ts).
 * A Success answer of a checked device counts only once its check passed: against a Join Server that answers
 * Success with a wrong accept, nothing counts and every answer is an error named by the check; against Joinkeep,
 * every checked accept passes and counts.
 */

const ERRORS_NONE = {};

function joinsAt(rate: number, verifyEvery: number, fleetRoot: string, url: string): Promise<LoadResult> {
  return runLoad({
    url,
    concurrency: 16,
    // A fresh server's first requests are slow (docs/performance.md); they fall in the warm-up, checked but not counted.
    warmupMs: 500,
    durationMs: 1_000,
    rate,
    timeoutMs: 5_000,
    work: { kind: 'joins', fleetRoot, style: 'tts', verifyEvery, maxRate: rate },
  });
}

describe('bench / load generator: checked accepts', () => {
  describe('against a Join Server that answers Success with a wrong accept', () => {
    let root: string;
    let server: http.Server;
    let url: string;
    let answered = 0;

    before(async () => {
      root = mkdtempSync(join(tmpdir(), 'joinkeep-load-checks-'));
      const nsKek = { label: 'ns-kek', key: randomBytes(16) };
      const provisioned: Provisioned = {
        root, dataDir: join(root, 'data'), nsToken: 'token', nsKek, asKek: { label: 'as-kek', key: randomBytes(16) }, asId: 'as', seconds: 0,
      };
      mkdirSync(join(root, 'secrets'), { mode: 0o700 });
      saveFleet(provisioned, buildFleet(16, '1.0.3'));
      // A well-formed JoinAns whose NwkSKey unwraps under the NS's KEK, so the NS side accepts it; the accept itself
      // is random bytes, which no device takes (its MIC fails).
      server = http.createServer((req, res) => {
        let body = '';
        req.on('data', (c: Buffer) => (body += c.toString()));
        req.on('end', () => {
          const r = JSON.parse(body) as Record<string, unknown>;
          answered++;
          const answer = JSON.stringify({
            ProtocolVersion: r['ProtocolVersion'], SenderID: r['ReceiverID'], ReceiverID: r['SenderID'], TransactionID: r['TransactionID'],
            MessageType: 'JoinAns', Result: { ResultCode: 'Success' }, Lifetime: 0, SessionKeyID: '00'.repeat(16),
            PHYPayload: `20${randomBytes(16).toString('hex').toUpperCase()}`,
            NwkSKey: { KEKLabel: nsKek.label, AESKey: aesKeyWrap(nsKek.key, randomBytes(16)).toString('hex').toUpperCase() },
          });
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(answer) }).end(answer);
        });
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    });
    after(async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(root, { recursive: true, force: true });
    });

    it('counts none of them: every answer is an error named by the device check', async () => {
      const before = answered;
      const report = await joinsAt(100, 1, root, url);
      const sent = answered - before;
      assert.ok(sent >= 50, `the server answered only ${sent} requests`);
      assert.equal(report.joins, 0);
      assert.equal(report.latenciesNs.length, 0);
      assert.equal(report.results['Success'], undefined);
      const named = Object.entries(report.errors);
      assert.equal(named.length, 1, JSON.stringify(report.errors));
      assert.match(named[0]![0], /^device dropped the accept: /);
      assert.ok(named[0]![1] >= 50 && named[0]![1] < sent, JSON.stringify(report.errors));
      // Every answer is checked, the warm-up's too; only those of the measured second are counted.
      assert.equal(report.verified, sent);
    });

    it('without checks, the same answers count as joins: the errors above came from the check', async () => {
      const report = await joinsAt(100, 0, root, url);
      assert.ok(report.joins >= 50, `${report.joins} joins`);
      assert.deepEqual(report.errors, ERRORS_NONE);
      assert.equal(report.verified, 0);
    });
  });

  describe('against joinkeep serve', () => {
    let root: string;
    let server: RunningServer;

    before(async () => {
      root = mkdtempSync(join(tmpdir(), 'joinkeep-load-checks-'));
      const fleet = buildFleet(16, 'mix');
      const provisioned = await provision(root, fleet, { kind: 'sqlite' }, 4, () => undefined);
      saveFleet(provisioned, fleet);
      server = await startServer(provisioned.dataDir);
    });
    after(async () => {
      await server?.stop();
      rmSync(root, { recursive: true, force: true });
    });

    it('checks every accept of every device (1.0.3 and 1.1) and counts each one that passes', async () => {
      const report = await joinsAt(100, 1, root, server.url);
      assert.deepEqual(report.errors, ERRORS_NONE);
      assert.ok(report.joins >= 50, `${report.joins} joins`);
      assert.equal(report.latenciesNs.length, report.joins);
      // Answers that arrived after the window are checked too (each moves its device's JoinNonce on), not counted.
      assert.ok(report.verified >= report.joins, `${report.verified} verified, ${report.joins} joins`);
    });

    it('a second run on the saved fleet passes too: the devices kept the JoinNonces they accepted', async () => {
      const report = await joinsAt(100, 1, root, server.url);
      assert.deepEqual(report.errors, ERRORS_NONE);
      assert.ok(report.joins >= 50, `${report.joins} joins`);
    });
  });
});
