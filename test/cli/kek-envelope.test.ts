import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { aesKeyWrap } from '../../src/custody/primitives.js';
import { cliJson, cliOk, runCli } from '../helpers/cli-run.js';
import { createTestToken, softhsmModulePath } from '../helpers/softhsm.js';

/*
 * `kek add --envelope`: a KEK that arrives wrapped under a KEK already in custody is unwrapped only inside custody
 * (in an HSM, straight into the token). Proven by using it afterwards: a device key wrapped under it imports.
 */

for (const custody of ['software', 'pkcs11'] as const) {
  describe(`CLI / kek add --envelope / ${custody}`, () => {
    let dir: string;
    let dataDir: string;
    const importKek = randomBytes(16);
    const envelope = (kek: Buffer, key: Buffer, label: string) => JSON.stringify({ KEKLabel: label, AESKey: aesKeyWrap(kek, key).toString('hex') });
    const labels = async () => (await cliJson<{ label: string }[]>(['kek', 'list', '--data-dir', dataDir])).map((k) => k.label).sort();

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), `joinkeep-kek-envelope-${custody}-`));
      dataDir = join(dir, 'jk');
      const extra: string[] = [];
      if (custody === 'pkcs11') {
        const token = createTestToken('kekenv');
        await writeFile(join(dir, 'pin'), token.pin, { mode: 0o600 });
        extra.push('--custody', 'pkcs11', '--pkcs11-module', softhsmModulePath(), '--token-label', token.label, '--pin-file', join(dir, 'pin'));
      }
      await cliOk(['init', '--data-dir', dataDir, ...extra]);
      await writeFile(join(dir, 'import.kek'), importKek.toString('hex'));
      await cliOk(['kek', 'add', '--data-dir', dataDir, '--label', 'import', '--key-file', join(dir, 'import.kek')]);
    });
    after(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('a KEK wrapped under an existing KEK is added, and works: a device key wrapped under it imports', async () => {
      const transportKek = randomBytes(16);
      const r = await cliOk(['kek', 'add', '--data-dir', dataDir, '--label', 'factory-2027', '--envelope', envelope(importKek, transportKek, 'import')]);
      assert.doesNotMatch(r.stdout + r.stderr, new RegExp(transportKek.toString('hex'), 'i'));
      assert.deepEqual(await labels(), ['factory-2027', 'import']);
      await cliOk(['device', 'add', '--data-dir', dataDir, '--dev-eui', '00000000000000E1', '--join-eui', '70B3D57ED0000001', '--mac-version', '1.0.3', '--home-net-id', '000013', '--app-key', envelope(transportKek, randomBytes(16), 'factory-2027')]);
    });

    for (const [name, args, code, message] of [
      ['a clear envelope (empty KEKLabel)', () => ['--envelope', JSON.stringify({ KEKLabel: '', AESKey: randomBytes(16).toString('hex') })], 1, /empty KEKLabel/],
      ['an envelope under an unknown KEK', () => ['--envelope', envelope(randomBytes(16), randomBytes(16), 'nobody')], 1, /no KEK labelled "nobody"/],
      ['an envelope wrapped under another key than the KEK it names', () => ['--envelope', envelope(randomBytes(16), randomBytes(16), 'import')], 1, /does not unwrap/],
      ['an envelope that is not JSON', () => ['--envelope', '{nope'], 1, /KeyEnvelope/],
      ['both --key-file and --envelope', () => ['--key-file', join(dir, 'import.kek'), '--envelope', envelope(importKek, randomBytes(16), 'import')], 2, /exactly one/],
    ] as const) {
      it(`${name} / refused (exit ${code}), no KEK added`, async () => {
        const before = await labels();
        const r = await runCli(['kek', 'add', '--data-dir', dataDir, '--label', `refused-${randomBytes(3).toString('hex')}`, ...args()]);
        assert.equal(r.code, code, r.stderr);
        assert.match(r.stderr, message);
        assert.deepEqual(await labels(), before);
      });
    }
  });
}
