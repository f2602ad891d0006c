import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import { claimCodeHash, generateClaimCode, generateDevices, parseSealedBatch, sealBatch, verifySealedBatch } from '../../../src/provisioning/sealed-batch/index.js';
import { generateMakerKey, makerRegistry, newRecipient } from '../../helpers/sealed-batch.js';

/*
 * 100,000 LoRaWAN 1.1 devices (200,000 wrapped keys, with claim codes): how long sealing, parsing and verifying
 * take. Printed, not asserted (machines differ); the figures go to docs/specs/sealed-batch.md.
 */

const N = 100_000;

describe('sealed batch / 100,000 devices', () => {
  it('seal, parse and verify; timings printed', async (t) => {
    const recipient = await newRecipient();
    const maker = await generateMakerKey('ES256');
    const ms = (since: number) => Math.round(performance.now() - since);

    let t0 = performance.now();
    const devices = generateDevices({ count: N, devEuiStart: '70B3D57E00000000', joinEui: '70B3D57ED0000000', macVersion: '1.1' });
    const withCodes = devices.map((d) => ({ ...d, appKey: d.appKey!, claimCodeHash: claimCodeHash(d.devEui, generateClaimCode()) }));
    const prepare = ms(t0);

    t0 = performance.now();
    const file = await sealBatch({ recipientJwk: recipient.publicJwk, signingKey: maker.privateJwk, maker: 'acme', content: { kind: 'device-keys', devices: withCodes } });
    const seal = ms(t0);

    t0 = performance.now();
    const parsed = parseSealedBatch(file);
    const parse = ms(t0);
    assert.equal(parsed.payload.deviceCount, N);

    t0 = performance.now();
    const verified = await verifySealedBatch(file, makerRegistry([{ name: 'acme', key: maker }]));
    const verify = ms(t0);
    assert.equal(verified.payload.devices.length, N);

    const line = `100,000 devices (LoRaWAN 1.1, 200,000 wrapped keys), file ${(file.length / 1e6).toFixed(1)} MB: generate + claim codes ${prepare} ms, seal ${seal} ms, parse ${parse} ms, verify (parse + signature) ${verify} ms`;
    t.diagnostic(line);
    console.log(line);
  });
});
