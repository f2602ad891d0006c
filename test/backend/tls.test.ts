import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { initDataDir } from '../../src/app/init.js';
import { type Running, serve } from '../../src/app/serve.js';
import { addNetworkServer } from '../../src/commissioning/peers.js';
import { addKek } from '../../src/provisioning/keks.js';

/*
 * Network servers may authenticate with a TLS client certificate instead of a bearer token (The Things Stack and
 * brocaar authenticate this way): the certificate must chain to the configured client CA and be the one pinned
 * for that NetID. Certificates are made with the openssl CLI for each run.
 */

function openssl(dir: string, ...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

function makePki(dir: string): void {
  openssl(dir, 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Test peers CA');
  openssl(dir, 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'server.key', '-out', 'server.pem', '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1');
  for (const name of ['ns', 'stranger']) {
    openssl(dir, 'req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}.example`);
    openssl(dir, 'x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2');
  }
  // Signed by nobody we trust.
  openssl(dir, 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'self.key', '-out', 'self.pem', '-days', '2', '-subj', '/CN=self');
}

describe('backend / TLS client certificates', () => {
  let dir: string;
  let running: Running;
  let port: number;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'joinkeep-tls-'));
    makePki(dir);
    const dataDir = join(dir, 'jk');
    await initDataDir(dataDir);
    const configPath = join(dataDir, 'joinkeep.json');
    const config = JSON.parse(await readFile(configPath, 'utf8'));
    config.backend.tls = { keyFile: join(dir, 'server.key'), certFile: join(dir, 'server.pem'), clientCaFile: join(dir, 'ca.pem') };
    await writeFile(configPath, JSON.stringify(config));
    running = await serve(dataDir, { listen: '127.0.0.1:0', logger: pino({ level: 'silent' }) });
    port = Number(new URL(running.url).port);
    const jk = running.joinkeep;
    const deps = { storage: jk.storage, custody: jk.custody, audit: jk.audit, actor: 'test' };
    await addKek(deps, 'ns-000013', Buffer.alloc(16, 1));
    const fingerprint = new X509Certificate(await readFile(join(dir, 'ns.pem'))).fingerprint256.replaceAll(':', '').toLowerCase();
    await addNetworkServer(deps, { netId: '000013', clientCertSha256: fingerprint, kekLabel: 'ns-000013' });
  });
  after(async () => {
    await running?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function homeNs(client?: string): Promise<Record<string, any>> {
    const body = JSON.stringify({ ProtocolVersion: '1.0', SenderID: '000013', ReceiverID: '70B3D57ED0000001', TransactionID: 1, MessageType: 'HomeNSReq', DevEUI: '0004A30B001C0530' });
    const ca = await readFile(join(dir, 'server.pem'));
    const cert = client ? await readFile(join(dir, `${client}.pem`)) : undefined;
    const key = client ? await readFile(join(dir, `${client}.key`)) : undefined;
    return new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/', ca, cert, key, headers: { 'content-type': 'application/json' } }, (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(text)) : reject(new Error(`HTTP ${res.statusCode}`))));
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  test('pinned certificate chaining to the client CA / authenticated (the device is unknown: UnkownReceiver, not UnknownSender)', async () => {
    assert.equal((await homeNs('ns')).Result.ResultCode, 'UnkownReceiver');
  });
  test('no certificate and no token / UnknownSender', async () => {
    assert.equal((await homeNs()).Result.ResultCode, 'UnknownSender');
  });
  test('certificate from the trusted CA but not pinned for any peer / UnknownSender', async () => {
    assert.equal((await homeNs('stranger')).Result.ResultCode, 'UnknownSender');
  });
  test('self-signed certificate / UnknownSender', async () => {
    assert.equal((await homeNs('self')).Result.ResultCode, 'UnknownSender');
  });
});
