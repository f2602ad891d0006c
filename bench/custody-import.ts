import { constants, createCipheriv, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { SealedImport } from '../src/custody/custody.js';
import { SoftwareKeyCustody, rootKeyHandle } from '../src/custody/index.js';
import { aesCmac } from '../src/custody/primitives.js';
import { openPostgresStorage, openSqliteStorage, type Storage } from '../src/storage/index.js';

/*
 * KeyCustody.importSealed on the software keystore: N devices (an AppKey and a NwkKey each) sealed to the receiving
 * key as a maker's tool would (RSA-OAEP, then RFC 3394 under an AES-256 batch key, with node:crypto), then imported
 * in one call into a fresh SQLite database (or PostgreSQL with --pg-url). Prints the figures; asserts nothing.
 *
 *   node dist/bench/custody-import.js [--devices 100000] [--oaep sha1|sha256] [--pg-url postgres://…]
 *
 * What is timed is the custody's part only: RSA-OAEP decryption of the batch key, 2N unwraps, 2N seals under the
 * master key (AES-256-GCM) and one insertKeyRecords call (one transaction, 500-row INSERTs). Parsing and checking a
 * batch file, and the device records, are the import pipeline's (bench/import).
 */

const { values } = parseArgs({
  options: {
    devices: { type: 'string', default: '100000' },
    oaep: { type: 'string', default: 'sha1' },
    'pg-url': { type: 'string' },
  },
});
const devices = Number(values.devices);
const oaep = values.oaep === 'sha256' ? 'sha256' : 'sha1';
if (!Number.isInteger(devices) || devices < 1) throw new Error(`--devices must be a positive integer, not ${values.devices}`);

const log = (s: string): void => void process.stdout.write(`${s}\n`);
const ms = (start: bigint): number => Number(process.hrtime.bigint() - start) / 1e6;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'joinkeep-bench-import-'));
  let storage: Storage | undefined;
  try {
    if (values['pg-url'] !== undefined) storage = await openPostgresStorage(values['pg-url']);
    else storage = await openSqliteStorage(join(dir, 'joinkeep.db'));
    await storage.migrate();
    const custody = new SoftwareKeyCustody(storage, randomBytes(32));
    const receiving = await custody.createReceivingKey();

    // The maker's side (not timed as the import): fresh batch key, keys wrapped under it.
    let start = process.hrtime.bigint();
    const batchKey = randomBytes(32);
    const clear: Buffer[] = [];
    const keys: SealedImport['keys'][number][] = [];
    for (let i = 0; i < devices; i++) {
      const devEui = (0x70b3d57e00000000n + BigInt(i)).toString(16).toUpperCase().padStart(16, '0');
      for (const name of ['AppKey', 'NwkKey'] as const) {
        const key = randomBytes(16);
        const c = createCipheriv('id-aes256-wrap', batchKey, Buffer.from('A6A6A6A6A6A6A6A6', 'hex'));
        keys.push({ handle: rootKeyHandle(devEui, name, 'bench'), usage: 'root', wrapped: Buffer.concat([c.update(key), c.final()]) });
        if (clear.length < 8) clear.push(key);
      }
    }
    const encrypted = publicEncrypt({ key: createPublicKey({ key: { ...receiving.jwk }, format: 'jwk' }), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: oaep }, batchKey);
    const sealMs = ms(start);

    start = process.hrtime.bigint();
    await custody.importSealed({ receivingKid: receiving.kid, batchKey: { oaep, encrypted }, keys });
    const importMs = ms(start);

    // A sample of the imported keys works.
    for (let i = 0; i < clear.length; i++) {
      const message = randomBytes(19);
      const mic = await custody.computeMic({ handle: keys[i]!.handle }, message);
      if (!mic.equals(aesCmac(clear[i]!, message).subarray(0, 4))) throw new Error(`imported key ${keys[i]!.handle} does not give the expected MIC`);
    }
    const listed = (await custody.listKeys()).filter((k) => k.usage === 'root').length;
    if (listed !== keys.length) throw new Error(`${listed} root keys listed, ${keys.length} imported`);
    await custody.close();

    log(`custody importSealed, software keystore on ${storage.kind}, RSA-OAEP ${oaep === 'sha1' ? '(SHA-1)' : '(SHA-256)'}:`);
    log(`  devices              ${devices.toLocaleString('en')} (${keys.length.toLocaleString('en')} keys)`);
    log(`  sealing (maker side) ${(sealMs / 1000).toFixed(2)} s`);
    log(`  importSealed         ${(importMs / 1000).toFixed(2)} s  (${Math.round(keys.length / (importMs / 1000)).toLocaleString('en')} keys/s)`);
  } finally {
    await storage?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
