import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { ProvisioningError } from '../../../src/provisioning/errors.js';
import { type MakerKeyPair, MAX_DEVICES, checkPayload, jsonPath, parseSealedBatch } from '../../../src/provisioning/sealed-batch/index.js';
import { generateMakerKey, signRaw } from '../../helpers/sealed-batch.js';

/*
 * The v1 payload rules (docs/specs/sealed-batch.md "Validation rules"), one refusal each, on well-signed files:
 * parseSealedBatch checks the format only, and names the JSON path of the first problem.
 */

const WRAPPED = 'A'.repeat(32);
const base = () => ({
  version: 1,
  batchId: '3b241101-e2bb-4255-8caf-4136c566a962',
  kind: 'device-keys',
  maker: 'acme-sensors',
  createdAt: '2026-11-23T12:00:00.000Z',
  recipient: { kid: 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs' },
  batchKey: { alg: 'RSA-OAEP-256', encryptedKey: 'B'.repeat(512) },
  deviceCount: 2,
  devices: [
    { devEui: '70B3D57ED0000001', joinEui: '70B3D57ED0000000', macVersion: '1.0.3', profile: 'acme-th-sensor-v2', serialNumber: 'SN-000001', claimCodeHash: 'c'.repeat(64), appKey: WRAPPED },
    { devEui: '70B3D57ED0000002', joinEui: '70B3D57ED0000000', macVersion: '1.1', appKey: WRAPPED, nwkKey: WRAPPED },
  ] as Record<string, unknown>[],
});
type Payload = ReturnType<typeof base> & Record<string, unknown>;

describe('sealed batch / format: payload rules, each refused with the JSON path of the problem', () => {
  let maker: MakerKeyPair;
  before(async () => {
    maker = await generateMakerKey('ES256');
  });
  const parse = async (payload: unknown) => parseSealedBatch(await signRaw(payload, maker.privateJwk));
  const rejects = async (edit: (p: Payload) => unknown, message: RegExp) => {
    const p = base() as Payload;
    const edited = edit(p) ?? p;
    await assert.rejects(parse(edited), (e: unknown) => {
      assert.ok(e instanceof ProvisioningError, String(e));
      assert.equal(e.code, 'BATCH_INVALID');
      assert.match(e.message, message);
      return true;
    });
  };

  it('the design example parses', async () => {
    const { payload, header } = await parse(base());
    assert.equal(payload.deviceCount, 2);
    assert.equal(header.kid, maker.kid);
  });

  it('deviceCount differs from the number of devices', () => rejects((p) => void (p.deviceCount = 3), /\$\.deviceCount is 3 but the batch lists 2 devices/));
  it('a DevEUI twice', () => rejects((p) => void (p.devices[1]!['devEui'] = '70B3D57ED0000001'), /\$\.devices\[1\]\.devEui 70B3D57ED0000001 is listed twice \(also at \$\.devices\[0\]\)/));
  it('a LoRaWAN 1.1 device without nwkKey', () => rejects((p) => void delete p.devices[1]!['nwkKey'], /\$\.devices\[1\]\.nwkKey is missing: 70B3D57ED0000002 is a LoRaWAN 1.1 device/));
  it('a LoRaWAN 1.0.x device with a nwkKey', () => rejects((p) => void (p.devices[0]!['nwkKey'] = WRAPPED), /\$\.devices\[0\]\.nwkKey must be absent/));
  it('a lower-case EUI (EUIs are canonical)', () => rejects((p) => void (p.devices[1]!['joinEui'] = '70b3d57ed0000000'), /\$\.devices\[1\]\.joinEui .*16 upper-case hex digits/));
  it('a MAC version not spelled canonically', () => rejects((p) => void (p.devices[0]!['macVersion'] = '1.0'), /\$\.devices\[0\]\.macVersion/));
  it('a device without appKey', () => rejects((p) => void delete p.devices[0]!['appKey'], /\$\.devices\[0\]\.appKey/));
  it('a wrapped key of the wrong length', () => rejects((p) => void (p.devices[0]!['appKey'] = 'A'.repeat(43)), /\$\.devices\[0\]\.appKey .*RFC 3394/));
  it('a property the format does not define', () => rejects((p) => void (p.devices[0]!['appKeyClear'] = '00'), /\$\.devices\[0\]\.appKeyClear/));
  it('an upper-case claimCodeHash', () => rejects((p) => void (p.devices[0]!['claimCodeHash'] = 'C'.repeat(64)), /\$\.devices\[0\]\.claimCodeHash/));
  it('a serial number longer than 64 characters', () => rejects((p) => void (p.devices[0]!['serialNumber'] = 'S'.repeat(65)), /\$\.devices\[0\]\.serialNumber/));
  it('a profile with a control character', () => rejects((p) => void (p.devices[0]!['profile'] = 'a\nb'), /\$\.devices\[0\]\.profile/));
  it('a createdAt that is not a real date', () => rejects((p) => void (p.createdAt = '2026-13-45T12:00:00Z'), /\$\.createdAt .* not a real date/));
  it('a batchId that is not a UUID v4', () => rejects((p) => void (p.batchId = 'batch-1'), /\$\.batchId/));
  it('a recipient kid that is not a thumbprint', () => rejects((p) => void (p.recipient.kid = 'short'), /\$\.recipient\.kid/));
  it('an OAEP variant the format does not name', () => rejects((p) => void (p.batchKey.alg = 'RSA1_5'), /\$\.batchKey\.alg/));
  it('version 2', () => rejects((p) => void (p.version = 2), /\$\.version is 2; this Joinkeep reads version 1/));
  it('an unknown kind', () => rejects((p) => void (p.kind = 'keys'), /\$\.kind is "keys"; expected one of device-keys, derived, derivation-master, transfer/));
  it('more than 1,000,000 devices announced', () => rejects((p) => void (p.deviceCount = MAX_DEVICES + 1), /\$\.deviceCount/));
  it('device-keys without a batch key', () => rejects((p) => void delete (p as Partial<Payload>).batchKey, /\$\.batchKey/));
  it('derived with a batch key (a derived batch carries no keys)', () =>
    rejects((p) => ({ ...p, kind: 'derived', derivedFrom: 'm1', devices: p.devices.map(({ appKey: _a, nwkKey: _n, ...id }) => id) }), /\$\.batchKey/));
  it('derived with a device key', () => rejects((p) => ({ ...p, kind: 'derived', derivedFrom: 'm1', batchKey: undefined }), /\$\.devices\[0\]\.appKey/));
  it('derivation-master with devices', () => rejects((p) => ({ ...p, kind: 'derivation-master', derivationMaster: { id: 'm1', wrappedKey: WRAPPED } }), /\$\.devices/));
  it('derivation-master without its wrapped key', () => rejects((p) => ({ ...p, kind: 'derivation-master', derivationMaster: { id: 'm1' }, deviceCount: 0, devices: [] }), /\$\.derivationMaster\.wrappedKey/));
  it('a payload that is not an object', () => rejects(() => [base()], /the payload: \$ must be a JSON object/));

  it('a payload that is not JSON', async () => {
    const file = await signRaw('{"version":1,', maker.privateJwk);
    assert.throws(() => parseSealedBatch(file), /the payload is not valid JSON/);
  });

  it('checkPayload returns the payload it accepts, unchanged', () => {
    const p = base();
    assert.equal(checkPayload(p), p);
  });

  it('jsonPath turns TypeBox JSON pointers into readable paths', () => {
    assert.equal(jsonPath(''), '$');
    assert.equal(jsonPath('/devices/12/devEui'), '$.devices[12].devEui');
    assert.equal(jsonPath('/a~1b/c d'), '$["a/b"]["c d"]');
  });
});
