import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { constants, createCipheriv, createDecipheriv, createPublicKey, generateKeyPairSync, privateDecrypt, publicEncrypt, randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, beforeEach, afterEach, describe, it } from 'node:test';
import { calculateJwkThumbprint } from 'jose';
import {
  CustodyError,
  type CustodyErrorCode,
  type JsonWebKeyRsaPublic,
  type KeyCustody,
  type OaepHash,
  type ReceivingKeyInfo,
  type SealedImport,
  SoftwareKeyCustody,
  createMasterKeyFile,
  derivationKeyHandle,
  kekHandle,
  loadMasterKey,
  receivingKeyHandle,
  rootKeyHandle,
} from '../../src/custody/index.js';
import { openPkcs11Custody } from '../../src/custody/pkcs11/index.js';
import { aes128EcbDecrypt, aes128EcbEncrypt, aesCmac, aesKeyWrap } from '../../src/custody/primitives.js';
import { eui64FromBeHex, legacySessionKeyBlock, lifetimeKeyBlock, netIdFromBeHex } from '../../src/protocol/index.js';
import type { Storage } from '../../src/storage/index.js';
import { createTestToken, softhsmModulePath, useTemporarySoftHsmConfig } from '../helpers/softhsm.js';
import { storageBackends } from '../helpers/storages.js';
import { type VectorSource, cite, hex, loadVectors, toHexUpper, watchInputs } from '../helpers/vectors.js';

/*
 * The custody contract (STYLE rule 4): every KeyCustody implementation passes the same tests, written only
 * against the interface. A backend joins by adding one factory below; the PKCS#11 backend will.
 * Vectors: spec-notes §1.12 A (LoRaWAN 1.0.3 join), B (1.1 join, JSIntKey MIC) and E (RFC 3394 wraps of A's session keys).
 */

// ---------------------------------------------------------------------------------------------------------------
// Vectors, loaded from test/vectors by name so that every value keeps its source.

interface JoinRequestVector { name: string; source: VectorSource[]; key: string; mic: string; phyPayload: string }
interface JoinAcceptVector { name: string; source: VectorSource[]; micKey: string; encKey: string; body: string; micInput?: string; mic: string; phyPayload: string; joinEui?: string }
interface DerivationVector { name: string; source: VectorSource[]; rootKey: string; inputs: Record<string, string | number>; expected: Record<string, string> }
interface WrapVector { name: string; source: VectorSource[]; kek: string; keyData: string; ciphertext: string }

function byName<T extends { name: string }>(list: readonly T[], name: string): T {
  const v = list.find((x) => x.name === name);
  if (!v) throw new Error(`vector "${name}" is missing from test/vectors`);
  return v;
}

const joinFile = loadVectors<{ joinRequests: JoinRequestVector[]; joinAccepts: JoinAcceptVector[] }>('lorawan-join');
const derivationFile = loadVectors<{ vectors: DerivationVector[] }>('key-derivation');
const wrapFile = loadVectors<{ vectors: WrapVector[] }>('keywrap-rfc3394');

const A = {
  request: byName(joinFile.joinRequests, 'LoRaWAN 1.0.3 join A'),
  accept: byName(joinFile.joinAccepts, 'LoRaWAN 1.0.3 join A, no CFList'),
  sessionKeys: byName(derivationFile.vectors, 'LoRaWAN 1.0.3 join A / NwkSKey and AppSKey'),
  nwkSKeyWrap: byName(wrapFile.vectors, 'NwkSKey of join A wrapped for the NS (JoinAns example)'),
  appSKeyWrap: byName(wrapFile.vectors, 'AppSKey of join A wrapped for the AS (JoinAns example)'),
  devEui: '0004A30B001C0530',
};
const B = {
  accept: byName(joinFile.joinAccepts, 'LoRaWAN 1.1 join B, OptNeg=1, JoinReqType 0xFF, MIC under JSIntKey, encrypted under NwkKey'),
  lifetimeKeys: byName(derivationFile.vectors, 'LoRaWAN 1.1 join B / JSIntKey and JSEncKey'),
  devEui: '0004A30B001C0531',
};

// The spec-notes §1.12 A statement of the MICs the contract must reproduce; cross-checked with the files above.
assert.equal(A.request.mic, '4F5CA349');
assert.equal(A.accept.mic, '4E3A149A');
assert.equal(B.accept.mic, 'A1C0A95A');

const NS_KEK_LABEL = 'ns-000013';
const AS_KEK_LABEL = 'as-1';

// ---------------------------------------------------------------------------------------------------------------
// Implementations under contract.

interface OpenedCustody {
  readonly custody: KeyCustody;
  /** Puts a KEK into custody the way an operator does for this backend. */
  importKek(label: string, key: Uint8Array): Promise<void>;
  cleanup(): Promise<void>;
}

interface CustodyFactory {
  readonly name: string;
  open(): Promise<OpenedCustody>;
}

const softwareFactories: readonly CustodyFactory[] = storageBackends.map((backend) => ({
  name: `software on ${backend.name}`,
  async open(): Promise<OpenedCustody> {
    const opened = await backend.open();
    const custody = new SoftwareKeyCustody(opened.storage, randomBytes(32));
    return {
      custody,
      importKek: (label, key) => custody.importKek(label, key),
      async cleanup() {
        await custody.close();
        await opened.cleanup();
      },
    };
  },
}));

// PKCS#11 on SoftHSM2: a fresh token per test (as a fresh database per test). The storage is opened to keep the
// shape of a deployment (PKCS#11 custody keeps nothing in it); the token is deleted afterwards, and the process's
// temporary SoftHSM2 configuration when the process exits.
let softHsmDirRemovedOnExit = false;
function tokenFactory(name: string, backend: (typeof storageBackends)[number], tokenCount: number): CustodyFactory {
  return {
    name,
    async open(): Promise<OpenedCustody> {
      const tokenDir = useTemporarySoftHsmConfig();
      if (!softHsmDirRemovedOnExit) process.once('exit', () => rmSync(dirname(tokenDir), { recursive: true, force: true }));
      softHsmDirRemovedOnExit = true;
      const opened = await backend.open();
      const tokens = Array.from({ length: tokenCount }, () => createTestToken('contract'));
      const dropTokens = (): void => {
        for (const t of tokens) execFileSync('softhsm2-util', ['--delete-token', '--token', t.label], { env: process.env, stdio: 'pipe' });
      };
      const custody = await openPkcs11Custody({ modulePath: softhsmModulePath(), tokens: tokens.map((t) => ({ label: t.label, pin: t.pin })) }).catch(async (error: unknown) => {
        dropTokens();
        await opened.cleanup();
        throw error;
      });
      return {
        custody,
        importKek: (label, key) => custody.importKek(label, key),
        async cleanup() {
          await custody.close();
          dropTokens();
          await opened.cleanup();
        },
      };
    },
  };
}
const pkcs11Factories: readonly CustodyFactory[] = storageBackends.map((backend) => tokenFactory(`pkcs11 (SoftHSM2) on ${backend.name}`, backend, 1));
// A pool of two tokens (replicated-custody.ts) must keep the same contract: it answers as one custody.
const poolFactory = tokenFactory('pkcs11 pool of two SoftHSM2 tokens on sqlite', storageBackends[0]!, 2);

const custodyFactories: readonly CustodyFactory[] = [...softwareFactories, ...pkcs11Factories, poolFactory];

// ---------------------------------------------------------------------------------------------------------------
// Helpers.

async function rejectsWith(promise: Promise<unknown>, code: CustodyErrorCode): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof CustodyError, `expected a CustodyError ${code}, got ${String(error)}`);
    assert.equal(error.code, code, `expected ${code}, got ${error.code}: ${error.message}`);
    return true;
  });
}

/** Imports a root key the way provisioning does: RFC 3394-wrapped under a transport KEK already in custody. */
async function importRoot(c: OpenedCustody, handle: string, key: Buffer, kekLabel = 'transport'): Promise<void> {
  if (!(await c.custody.hasKek(kekLabel))) await c.importKek(kekLabel, transportKek);
  await c.custody.importWrapped(handle, 'root', aesKeyWrap(transportKek, key), kekLabel);
}

const transportKek = randomBytes(16);

function handles(list: readonly { handle: string }[]): string[] {
  return list.map((k) => k.handle).sort();
}

/** Join-accept cipher input: everything after MHDR, then the MIC (LoRaWAN 1.1 §6.2.3). */
function cipherInput(body: Buffer, mic: Buffer): Buffer {
  return Buffer.concat([body.subarray(1), mic]);
}

// ---------------------------------------------------------------------------------------------------------------

for (const factory of custodyFactories) {
  describe(`custody contract / ${factory.name}`, () => {
    let c: OpenedCustody;
    beforeEach(async () => {
      c = await factory.open();
    });
    afterEach(async () => {
      await c.cleanup();
    });

    const appKeyA = rootKeyHandle(A.devEui, 'AppKey', 'contract');
    const nwkKeyB = rootKeyHandle(B.devEui, 'NwkKey', 'contract');

    describe('vector A (LoRaWAN 1.0.3 join) [spec-notes §1.12 A]', () => {
      it('importKek then importWrapped (RFC 3394 under that KEK): the root key is held, listed as root, KEK listed as kek', async () => {
        const kek = randomBytes(16);
        await c.importKek('provisioning', kek);
        const wrapped = aesKeyWrap(kek, hex(A.request.key));
        const unchanged = watchInputs(kek, wrapped);
        await c.custody.importWrapped(appKeyA, 'root', wrapped, 'provisioning');
        unchanged();
        assert.equal(await c.custody.hasKey(appKeyA), true);
        assert.equal(await c.custody.hasKek('provisioning'), true);
        assert.equal(await c.custody.hasKek('other'), false);
        const keys = await c.custody.listKeys();
        assert.deepEqual(
          keys.map((k) => [k.handle, k.usage]).sort(),
          [[appKeyA, 'root'], [kekHandle('provisioning'), 'kek']].sort(),
        );
        for (const k of keys) assert.ok(k.createdAt instanceof Date && !Number.isNaN(k.createdAt.getTime()));
      });

      it(`verifyMic accepts the Join-request MIC ${A.request.mic} and refuses any other [${cite(A.request.source)}]`, async () => {
        await importRoot(c, appKeyA, hex(A.request.key));
        const phy = hex(A.request.phyPayload);
        const micInput = phy.subarray(0, 19);
        const mic = Buffer.from(phy.subarray(19));
        const unchanged = watchInputs(phy, mic);
        assert.equal(await c.custody.verifyMic({ handle: appKeyA }, micInput, mic), true);
        const bad = Buffer.from(mic);
        bad[3] = (bad[3] ?? 0) ^ 0x01;
        assert.equal(await c.custody.verifyMic({ handle: appKeyA }, micInput, bad), false);
        assert.equal(await c.custody.verifyMic({ handle: appKeyA }, micInput, mic.subarray(0, 3)), false, 'a 3-byte MIC never matches');
        unchanged();
      });

      it(`computeMic gives the Join-request MIC ${A.request.mic} and the Join-accept MIC ${A.accept.mic}`, async () => {
        await importRoot(c, appKeyA, hex(A.request.key));
        const micInput = hex(A.request.phyPayload).subarray(0, 19);
        const body = hex(A.accept.body);
        const unchanged = watchInputs(micInput, body);
        const jrMic = await c.custody.computeMic({ handle: appKeyA }, micInput);
        assert.equal(jrMic.length, 4);
        assert.equal(toHexUpper(jrMic), A.request.mic);
        assert.equal(toHexUpper(await c.custody.computeMic({ handle: appKeyA }, body)), A.accept.mic);
        unchanged();
      });

      it(`encryptJoinAccept reproduces the Join-accept ${A.accept.phyPayload} [${cite(A.accept.source)}]`, async () => {
        await importRoot(c, appKeyA, hex(A.request.key));
        const input = cipherInput(hex(A.accept.body), hex(A.accept.mic));
        const unchanged = watchInputs(input);
        const cipher = await c.custody.encryptJoinAccept({ handle: appKeyA }, input);
        unchanged();
        assert.equal(toHexUpper(Buffer.concat([Buffer.of(0x20), cipher])), A.accept.phyPayload);
      });

      it('encryptJoinAccept refuses a plaintext that is not 16 or 32 bytes (INVALID_KEY)', async () => {
        await importRoot(c, appKeyA, hex(A.request.key));
        await rejectsWith(c.custody.encryptJoinAccept({ handle: appKeyA }, Buffer.alloc(17)), 'INVALID_KEY');
      });

      it('deriveAndExport wraps NwkSKey under the NS KEK and AppSKey under the AS KEK to the vector E wraps [spec-notes §1.12 E]', async () => {
        await importRoot(c, appKeyA, hex(A.request.key));
        await c.importKek(NS_KEK_LABEL, hex(A.nwkSKeyWrap.kek));
        await c.importKek(AS_KEK_LABEL, hex(A.appSKeyWrap.kek));
        const input = {
          joinNonce: Number(A.sessionKeys.inputs['joinNonce']),
          netId: netIdFromBeHex(String(A.sessionKeys.inputs['netId'])),
          devNonce: Number(A.sessionKeys.inputs['devNonce']),
        };
        const nwkBlock = legacySessionKeyBlock('NwkSKey', input);
        const appBlock = legacySessionKeyBlock('AppSKey', input);
        const unchanged = watchInputs(nwkBlock, appBlock);
        const [nwk, app, ...rest] = await c.custody.deriveAndExport(appKeyA, [
          { block: nwkBlock, to: { kekLabel: NS_KEK_LABEL } },
          { block: appBlock, to: { kekLabel: AS_KEK_LABEL } },
        ]);
        unchanged();
        assert.equal(rest.length, 0);
        assert.equal(nwk?.kekLabel, NS_KEK_LABEL);
        assert.equal(toHexUpper(nwk!.key), A.nwkSKeyWrap.ciphertext);
        assert.equal(app?.kekLabel, AS_KEK_LABEL);
        assert.equal(toHexUpper(app!.key), A.appSKeyWrap.ciphertext);
        assert.equal(A.nwkSKeyWrap.keyData, A.sessionKeys.expected['NwkSKey'], 'vector E wraps the NwkSKey of vector A');
      });

      it('deriveAndExport gives a clear key only to a { clear: { peer, allowedBy: "operator-peer-setting" } } destination', async () => {
        await importRoot(c, appKeyA, hex(A.request.key));
        const input = { joinNonce: 1, netId: netIdFromBeHex('000013'), devNonce: Number(A.sessionKeys.inputs['devNonce']) };
        const [clear] = await c.custody.deriveAndExport(appKeyA, [
          { block: legacySessionKeyBlock('NwkSKey', input), to: { clear: { peer: 'ns/000013', allowedBy: 'operator-peer-setting' } } },
        ]);
        assert.equal(clear?.kekLabel, null);
        assert.equal(toHexUpper(clear!.key), A.sessionKeys.expected['NwkSKey']);
      });

      it('deriveAndExport refuses a clear destination without the operator authorisation (CLEAR_EXPORT_REFUSED) and exports nothing', async () => {
        await importRoot(c, appKeyA, hex(A.request.key));
        const block = legacySessionKeyBlock('NwkSKey', { joinNonce: 1, netId: netIdFromBeHex('000013'), devNonce: 1 });
        const forged = { clear: { peer: 'ns/000013', allowedBy: 'someone-else' } } as unknown as { clear: { peer: string; allowedBy: 'operator-peer-setting' } };
        await rejectsWith(c.custody.deriveAndExport(appKeyA, [{ block, to: forged }]), 'CLEAR_EXPORT_REFUSED');
      });

      it('deriveAndExport to an unknown KEK label is refused (KEK_NOT_FOUND)', async () => {
        await importRoot(c, appKeyA, hex(A.request.key));
        const block = legacySessionKeyBlock('NwkSKey', { joinNonce: 1, netId: netIdFromBeHex('000013'), devNonce: 1 });
        await rejectsWith(c.custody.deriveAndExport(appKeyA, [{ block, to: { kekLabel: 'nobody' } }]), 'KEK_NOT_FOUND');
      });

      it('a derivation block that is not 16 bytes is refused (INVALID_KEY)', async () => {
        await importRoot(c, appKeyA, hex(A.request.key));
        await c.importKek(NS_KEK_LABEL, hex(A.nwkSKeyWrap.kek));
        await rejectsWith(c.custody.deriveAndExport(appKeyA, [{ block: Buffer.alloc(15), to: { kekLabel: NS_KEK_LABEL } }]), 'INVALID_KEY');
        await rejectsWith(c.custody.computeMic({ handle: appKeyA, derive: Buffer.alloc(17) }, Buffer.alloc(4)), 'INVALID_KEY');
      });
    });

    describe('vector B (LoRaWAN 1.1 join, OptNeg=1) [spec-notes §1.12 B]', () => {
      it(`a derived KeyRef { handle: NwkKey, derive: JSIntKey block } gives the Join-accept MIC ${B.accept.mic}`, async () => {
        await importRoot(c, nwkKeyB, hex(B.lifetimeKeys.rootKey));
        const derive = lifetimeKeyBlock('JSIntKey', eui64FromBeHex(B.devEui));
        const micInput = hex(B.accept.micInput ?? '');
        const unchanged = watchInputs(derive, micInput);
        assert.equal(toHexUpper(await c.custody.computeMic({ handle: nwkKeyB, derive }, micInput)), B.accept.mic);
        assert.equal(await c.custody.verifyMic({ handle: nwkKeyB, derive }, micInput, hex(B.accept.mic)), true);
        // The same bytes under NwkKey itself (no derivation) must not verify: the derivation is really applied.
        assert.equal(await c.custody.verifyMic({ handle: nwkKeyB }, micInput, hex(B.accept.mic)), false);
        unchanged();
      });

      it(`encryptJoinAccept under NwkKey reproduces ${B.accept.phyPayload} [${cite(B.accept.source)}]`, async () => {
        await importRoot(c, nwkKeyB, hex(B.lifetimeKeys.rootKey));
        const cipher = await c.custody.encryptJoinAccept({ handle: nwkKeyB }, cipherInput(hex(B.accept.body), hex(B.accept.mic)));
        assert.equal(toHexUpper(Buffer.concat([Buffer.of(0x20), cipher])), B.accept.phyPayload);
      });
    });

    describe('completeJoin: the accept and the session keys of one join in one call', () => {
      const legacyInput = {
        joinNonce: Number(A.sessionKeys.inputs['joinNonce']),
        netId: netIdFromBeHex(String(A.sessionKeys.inputs['netId'])),
        devNonce: Number(A.sessionKeys.inputs['devNonce']),
      };

      it(`vector A: the Join-accept ${A.accept.phyPayload} and the vector E wraps of NwkSKey and AppSKey [${cite(A.accept.source)}; spec-notes §1.12 E]`, async () => {
        await importRoot(c, appKeyA, hex(A.request.key));
        await c.importKek(NS_KEK_LABEL, hex(A.nwkSKeyWrap.kek));
        await c.importKek(AS_KEK_LABEL, hex(A.appSKeyWrap.kek));
        const body = hex(A.accept.body);
        const nwkBlock = legacySessionKeyBlock('NwkSKey', legacyInput);
        const appBlock = legacySessionKeyBlock('AppSKey', legacyInput);
        const unchanged = watchInputs(body, nwkBlock, appBlock);
        const done = await c.custody.completeJoin({ micKey: { handle: appKeyA }, micInput: body, encryptionKey: { handle: appKeyA }, body }, [
          { root: appKeyA, block: nwkBlock, to: { kekLabel: NS_KEK_LABEL } },
          { root: appKeyA, block: appBlock, to: { kekLabel: AS_KEK_LABEL } },
        ]);
        unchanged();
        assert.equal(toHexUpper(Buffer.concat([Buffer.of(0x20), done.encrypted])), A.accept.phyPayload);
        assert.deepEqual(done.keys.map((k) => [k.kekLabel, toHexUpper(k.key)]), [[NS_KEK_LABEL, A.nwkSKeyWrap.ciphertext], [AS_KEK_LABEL, A.appSKeyWrap.ciphertext]]);
      });

      it(`vector B: MIC under the derived JSIntKey, encryption under NwkKey, reproduces ${B.accept.phyPayload}; no keys asked, none exported [${cite(B.accept.source)}]`, async () => {
        await importRoot(c, nwkKeyB, hex(B.lifetimeKeys.rootKey));
        const derive = lifetimeKeyBlock('JSIntKey', eui64FromBeHex(B.devEui));
        const done = await c.custody.completeJoin({ micKey: { handle: nwkKeyB, derive }, micInput: hex(B.accept.micInput ?? ''), encryptionKey: { handle: nwkKeyB }, body: hex(B.accept.body) }, []);
        assert.equal(toHexUpper(Buffer.concat([Buffer.of(0x20), done.encrypted])), B.accept.phyPayload);
        assert.deepEqual(done.keys, []);
        // Twice more: a custody that keeps the lifetime key (PKCS#11) gives the same accept on later uses.
        for (let i = 0; i < 2; i++) {
          const again = await c.custody.completeJoin({ micKey: { handle: nwkKeyB, derive }, micInput: hex(B.accept.micInput ?? ''), encryptionKey: { handle: nwkKeyB }, body: hex(B.accept.body) }, []);
          assert.deepEqual(again.encrypted, done.encrypted);
        }
      });

      it('equals computeMic + encryptJoinAccept + deriveAndExport, clear destination included', async () => {
        await importRoot(c, appKeyA, hex(A.request.key));
        await c.importKek(NS_KEK_LABEL, hex(A.nwkSKeyWrap.kek));
        const body = hex(A.accept.body);
        const block = legacySessionKeyBlock('NwkSKey', legacyInput);
        const clear = { clear: { peer: 'as/1', allowedBy: 'operator-peer-setting' } } as const;
        const done = await c.custody.completeJoin({ micKey: { handle: appKeyA }, micInput: body, encryptionKey: { handle: appKeyA }, body }, [
          { root: appKeyA, block, to: { kekLabel: NS_KEK_LABEL } },
          { root: appKeyA, block, to: clear },
        ]);
        const mic = await c.custody.computeMic({ handle: appKeyA }, body);
        assert.deepEqual(done.encrypted, await c.custody.encryptJoinAccept({ handle: appKeyA }, cipherInput(body, mic)));
        assert.deepEqual(done.keys, await c.custody.deriveAndExport(appKeyA, [{ block, to: { kekLabel: NS_KEK_LABEL } }, { block, to: clear }]));
        assert.equal(toHexUpper(done.keys[1]!.key), A.sessionKeys.expected['NwkSKey']);
      });

      it('refusals, each before any work: unknown root (KEY_NOT_FOUND), KEK as root (KEY_NOT_FOUND), unknown KEK (KEK_NOT_FOUND), forged clear authorisation (CLEAR_EXPORT_REFUSED), wrong body or block size (INVALID_KEY)', async () => {
        await importRoot(c, appKeyA, hex(A.request.key));
        await c.importKek(NS_KEK_LABEL, hex(A.nwkSKeyWrap.kek));
        const body = hex(A.accept.body);
        const block = legacySessionKeyBlock('NwkSKey', legacyInput);
        const accept = { micKey: { handle: appKeyA }, micInput: body, encryptionKey: { handle: appKeyA }, body };
        const ns = { kekLabel: NS_KEK_LABEL };
        await rejectsWith(c.custody.completeJoin({ ...accept, micKey: { handle: 'root/none' } }, [{ root: appKeyA, block, to: ns }]), 'KEY_NOT_FOUND');
        await rejectsWith(c.custody.completeJoin({ ...accept, encryptionKey: { handle: kekHandle(NS_KEK_LABEL) } }, [{ root: appKeyA, block, to: ns }]), 'KEY_NOT_FOUND');
        await rejectsWith(c.custody.completeJoin(accept, [{ root: 'root/none', block, to: ns }]), 'KEY_NOT_FOUND');
        await rejectsWith(c.custody.completeJoin(accept, [{ root: appKeyA, block, to: ns }, { root: appKeyA, block, to: { kekLabel: 'nobody' } }]), 'KEK_NOT_FOUND');
        const forged = { clear: { peer: 'ns/000013', allowedBy: 'someone-else' } } as unknown as { clear: { peer: string; allowedBy: 'operator-peer-setting' } };
        await rejectsWith(c.custody.completeJoin(accept, [{ root: appKeyA, block, to: forged }]), 'CLEAR_EXPORT_REFUSED');
        await rejectsWith(c.custody.completeJoin({ ...accept, body: Buffer.concat([body, Buffer.alloc(1)]) }, [{ root: appKeyA, block, to: ns }]), 'INVALID_KEY');
        await rejectsWith(c.custody.completeJoin(accept, [{ root: appKeyA, block: Buffer.alloc(15), to: ns }]), 'INVALID_KEY');
        await rejectsWith(c.custody.completeJoin({ ...accept, micKey: { handle: appKeyA, derive: Buffer.alloc(17) } }, []), 'INVALID_KEY');
      });
    });

    describe('refusals', () => {
      it('importWrapped under the wrong KEK is refused (UNWRAP_FAILED) and nothing is stored', async () => {
        await c.importKek('right', randomBytes(16));
        await c.importKek('wrong', randomBytes(16));
        const before = handles(await c.custody.listKeys());
        const wrapped = aesKeyWrap(randomBytes(16), randomBytes(16));
        await rejectsWith(c.custody.importWrapped(appKeyA, 'root', wrapped, 'wrong'), 'UNWRAP_FAILED');
        assert.deepEqual(handles(await c.custody.listKeys()), before);
        assert.equal(await c.custody.hasKey(appKeyA), false);
      });

      it('importWrapped of a corrupted (truncated) envelope is refused and nothing is stored', async () => {
        const kek = randomBytes(16);
        await c.importKek('k', kek);
        const before = handles(await c.custody.listKeys());
        const wrapped = aesKeyWrap(kek, randomBytes(16)).subarray(0, 23);
        await assert.rejects(c.custody.importWrapped(appKeyA, 'root', wrapped, 'k'), CustodyError);
        assert.deepEqual(handles(await c.custody.listKeys()), before);
      });

      it('importWrapped under an unknown KEK label is refused (KEK_NOT_FOUND) and nothing is stored', async () => {
        const before = handles(await c.custody.listKeys());
        await rejectsWith(c.custody.importWrapped(appKeyA, 'root', aesKeyWrap(randomBytes(16), randomBytes(16)), 'nobody'), 'KEK_NOT_FOUND');
        assert.deepEqual(handles(await c.custody.listKeys()), before);
      });

      it('importWrapped to a handle already held is refused (KEY_EXISTS) and the first key stays in use', async () => {
        await importRoot(c, appKeyA, hex(A.request.key));
        await rejectsWith(importRoot(c, appKeyA, randomBytes(16)), 'KEY_EXISTS');
        const micInput = hex(A.request.phyPayload).subarray(0, 19);
        assert.equal(toHexUpper(await c.custody.computeMic({ handle: appKeyA }, micInput)), A.request.mic);
      });

      it('importKek with a label already held is refused (KEY_EXISTS)', async () => {
        await c.custody.importKek('dup', randomBytes(16));
        await rejectsWith(c.custody.importKek('dup', randomBytes(16)), 'KEY_EXISTS');
      });

      it('importKek of a key that is not 16, 24 or 32 bytes is refused (INVALID_KEY) and nothing is stored', async () => {
        await rejectsWith(c.custody.importKek('short', randomBytes(15)), 'INVALID_KEY');
        assert.equal(await c.custody.hasKek('short'), false);
      });

      it('an operation on an unknown handle is refused (KEY_NOT_FOUND)', async () => {
        await rejectsWith(c.custody.computeMic({ handle: 'root/none' }, Buffer.alloc(4)), 'KEY_NOT_FOUND');
      });

      it('a KEK is refused as a root key: MIC, encryption and derivation (wrong usage)', async () => {
        await c.importKek('k16', randomBytes(16));
        const h = kekHandle('k16');
        await assert.rejects(c.custody.computeMic({ handle: h }, Buffer.alloc(19)), CustodyError);
        await assert.rejects(c.custody.verifyMic({ handle: h }, Buffer.alloc(19), Buffer.alloc(4)), CustodyError);
        await assert.rejects(c.custody.encryptJoinAccept({ handle: h }, Buffer.alloc(16)), CustodyError);
        await assert.rejects(c.custody.deriveAndExport(h, [{ block: Buffer.alloc(16), to: { clear: { peer: 'p', allowedBy: 'operator-peer-setting' } } }]), CustodyError);
      });

      it('a KEK is refused as a root key even after it has been used to unwrap (wrong usage)', async () => {
        // The KEK is now opened (an implementation may cache it); its usage must still be checked on every use.
        await importRoot(c, appKeyA, hex(A.request.key), 'k16');
        const h = kekHandle('k16');
        await assert.rejects(c.custody.computeMic({ handle: h }, Buffer.alloc(19)), CustodyError, 'computeMic ran with a KEK as its root key');
        await assert.rejects(
          c.custody.deriveAndExport(h, [{ block: Buffer.alloc(16), to: { clear: { peer: 'p', allowedBy: 'operator-peer-setting' } } }]),
          CustodyError,
          'deriveAndExport derived a key from a KEK and exported it in clear',
        );
      });

      it('a root key is refused as a KEK (wrong usage)', async () => {
        // A root key imported under a handle in the KEK namespace must still not wrap or unwrap.
        await importRoot(c, kekHandle('posing'), randomBytes(16));
        await assert.rejects(c.custody.importWrapped('root/x', 'root', aesKeyWrap(randomBytes(16), randomBytes(16)), 'posing'), CustodyError);
        assert.equal(await c.custody.hasKey('root/x'), false);
      });
    });

    describe('deleteKey', () => {
      it('deletes a root key: hasKey false, no longer listed, operations refused (KEY_NOT_FOUND), other keys kept', async () => {
        await importRoot(c, appKeyA, hex(A.request.key));
        const micInput = hex(A.request.phyPayload).subarray(0, 19);
        await c.custody.computeMic({ handle: appKeyA }, micInput); // used once, so an implementation may have it cached
        await c.custody.deleteKey(appKeyA);
        assert.equal(await c.custody.hasKey(appKeyA), false);
        assert.deepEqual(handles(await c.custody.listKeys()), [kekHandle('transport')]);
        await rejectsWith(c.custody.computeMic({ handle: appKeyA }, micInput), 'KEY_NOT_FOUND');
      });

      it('deleting a root key also ends the lifetime keys derived from it (JSIntKey), even after they were used', async () => {
        await importRoot(c, appKeyA, randomBytes(16));
        const derive = Buffer.concat([Buffer.from([0x06]), randomBytes(8), Buffer.alloc(7)]);
        const message = randomBytes(40);
        const first = await c.custody.computeMic({ handle: appKeyA, derive }, message);
        assert.deepEqual(await c.custody.computeMic({ handle: appKeyA, derive }, message), first, 'same derived key on reuse');
        await c.custody.deleteKey(appKeyA);
        await rejectsWith(c.custody.computeMic({ handle: appKeyA, derive }, message), 'KEY_NOT_FOUND');
        await importRoot(c, appKeyA, randomBytes(16));
        assert.notDeepEqual(await c.custody.computeMic({ handle: appKeyA, derive }, message), first, 'a new root key derives a new lifetime key');
      });

      it('after deletion the handle can be imported again with a new key', async () => {
        await importRoot(c, appKeyA, randomBytes(16));
        await c.custody.deleteKey(appKeyA);
        await importRoot(c, appKeyA, hex(A.request.key));
        const micInput = hex(A.request.phyPayload).subarray(0, 19);
        assert.equal(toHexUpper(await c.custody.computeMic({ handle: appKeyA }, micInput)), A.request.mic);
      });

      it('deletes a KEK: hasKek false and unwrapping under it is refused (KEK_NOT_FOUND)', async () => {
        await c.importKek('gone', transportKek);
        await c.custody.deleteKey(kekHandle('gone'));
        assert.equal(await c.custody.hasKek('gone'), false);
        await rejectsWith(c.custody.importWrapped('root/y', 'root', aesKeyWrap(transportKek, randomBytes(16)), 'gone'), 'KEK_NOT_FOUND');
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Receiving key and sealed batches (docs/specs/sealed-batch.md). A receiving key is slow to make (RSA-3072, and on a
// pool it is copied to every token), so each implementation gets one custody and one receiving key for the whole
// section; every test uses handles of its own and checks what it changed.

const RFC3394_IV = Buffer.from('A6A6A6A6A6A6A6A6', 'hex');

/** The maker's side, with node:crypto only: RFC 3394 under an AES-256 batch key (id-aes256-wrap). */
function wrap256(batchKey: Buffer, key: Buffer): Buffer {
  const c = createCipheriv('id-aes256-wrap', batchKey, RFC3394_IV);
  return Buffer.concat([c.update(key), c.final()]);
}

function unwrap256(batchKey: Buffer, wrapped: Buffer): Buffer {
  const d = createDecipheriv('id-aes256-wrap', batchKey, RFC3394_IV);
  return Buffer.concat([d.update(wrapped), d.final()]);
}

/** The batch key RSA-OAEP-encrypted to `jwk` with node:crypto (MGF1 with the same hash, no label). */
function sealBatchKey(jwk: JsonWebKeyRsaPublic | { kty: 'RSA'; n: string; e: string }, oaep: OaepHash, batchKey: Buffer): Buffer {
  return publicEncrypt({ key: createPublicKey({ key: { kty: 'RSA', n: jwk.n, e: jwk.e }, format: 'jwk' }), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: oaep }, batchKey);
}

interface ClearKey { readonly handle: string; readonly usage: 'root' | 'derivation'; readonly key: Buffer }

/** A sealed batch of `keys` to the receiving key `receiving`, as a maker's tool makes it; and its batch key. */
function sealKeys(receiving: ReceivingKeyInfo, keys: readonly ClearKey[], oaep: OaepHash = 'sha1'): { input: SealedImport; batchKey: Buffer } {
  const batchKey = randomBytes(32);
  return {
    batchKey,
    input: {
      receivingKid: receiving.kid,
      batchKey: { oaep, encrypted: sealBatchKey(receiving.jwk, oaep, batchKey) },
      keys: keys.map((k) => ({ handle: k.handle, usage: k.usage, wrapped: wrap256(batchKey, k.key) })),
    },
  };
}

/** `count` random device root keys named for this test. */
function deviceKeys(tag: string, count: number): ClearKey[] {
  return Array.from({ length: count }, (_, i) => ({
    handle: rootKeyHandle(`70B3D57ED${i.toString(16).toUpperCase().padStart(7, '0')}`, i % 2 === 0 ? 'AppKey' : 'NwkKey', tag),
    usage: 'root' as const,
    key: randomBytes(16),
  }));
}

/** JK-KDF-1 input block (docs/specs/sealed-batch.md): 0x01 (AppKey) or 0x02 (NwkKey) ‖ DevEUI (MSB first) ‖ "JK-KDF1". */
function kdfBlock(devEui: string, name: 'AppKey' | 'NwkKey'): Buffer {
  return Buffer.concat([Buffer.of(name === 'AppKey' ? 0x01 : 0x02), Buffer.from(devEui, 'hex'), Buffer.from('JK-KDF1', 'ascii')]);
}

/** The key behaves as `clear` does in node:crypto: CMAC (computeMic, verifyMic) and AES (encryptJoinAccept). */
async function assertSameKey(custody: KeyCustody, handle: string, clear: Buffer): Promise<void> {
  const message = randomBytes(23);
  const mic = aesCmac(clear, message).subarray(0, 4);
  assert.deepEqual(await custody.computeMic({ handle }, message), mic, `CMAC under ${handle}`);
  assert.equal(await custody.verifyMic({ handle }, message, mic), true);
  const block = randomBytes(16);
  assert.deepEqual(await custody.encryptJoinAccept({ handle }, block), aes128EcbDecrypt(clear, block), `AES under ${handle}`);
}

for (const factory of custodyFactories) {
  describe(`custody contract / ${factory.name} / receiving key and sealed batches`, () => {
    let c: OpenedCustody;
    let receiving: ReceivingKeyInfo;
    before(async () => {
      c = await factory.open();
      receiving = await c.custody.createReceivingKey();
    });
    after(async () => {
      await c?.cleanup();
    });

    /** Runs `attempt`, expecting `code`, and checks that custody holds exactly the keys it held before. */
    async function refusedAndUnchanged(attempt: () => Promise<unknown>, code: CustodyErrorCode, absent: readonly string[] = []): Promise<void> {
      const before = handles(await c.custody.listKeys());
      await rejectsWith(attempt(), code);
      assert.deepEqual(handles(await c.custody.listKeys()), before, 'custody holds the same keys as before');
      for (const h of absent) assert.equal(await c.custody.hasKey(h), false, `${h} was not imported`);
    }

    describe('createReceivingKey / listReceivingKeys', () => {
      it('gives a public JWK (kty RSA, 3072-bit n, e = 65537, alg RSA-OAEP-256, use enc) that node:crypto loads, with kid = its RFC 7638 thumbprint (as jose computes it)', async () => {
        const { jwk } = receiving;
        assert.deepEqual(Object.keys(jwk).sort(), ['alg', 'e', 'kid', 'kty', 'n', 'use']);
        assert.equal(jwk.kty, 'RSA');
        assert.equal(jwk.alg, 'RSA-OAEP-256');
        assert.equal(jwk.use, 'enc');
        assert.equal(jwk.e, 'AQAB');
        assert.match(jwk.n, /^[A-Za-z0-9_-]+$/, 'n is base64url without padding');
        const key = createPublicKey({ key: { ...jwk }, format: 'jwk' });
        assert.equal(key.asymmetricKeyDetails?.modulusLength, 3072);
        assert.equal(key.asymmetricKeyDetails?.publicExponent, 65537n);
        assert.equal(receiving.kid, jwk.kid);
        assert.equal(jwk.kid, await calculateJwkThumbprint({ kty: 'RSA', n: jwk.n, e: jwk.e }, 'sha256'));
        assert.ok(Math.abs(receiving.createdAt.getTime() - Date.now()) < 10 * 60_000, 'createdAt is the creation time');
      });

      it('is listed by listReceivingKeys (same JWK) and by listKeys as receiving/<kid> with usage receiving; hasKey knows it', async () => {
        const listed = (await c.custody.listReceivingKeys()).find((k) => k.kid === receiving.kid);
        assert.ok(listed, 'listed by listReceivingKeys');
        assert.deepEqual(listed.jwk, receiving.jwk);
        const info = (await c.custody.listKeys()).find((k) => k.handle === receivingKeyHandle(receiving.kid));
        assert.equal(info?.usage, 'receiving');
        assert.equal(await c.custody.hasKey(receivingKeyHandle(receiving.kid)), true);
      });

      it('is not a root key: MIC, Join-accept encryption and derivation with it are refused (KEY_NOT_FOUND)', async () => {
        const handle = receivingKeyHandle(receiving.kid);
        await rejectsWith(c.custody.computeMic({ handle }, Buffer.alloc(19)), 'KEY_NOT_FOUND');
        await rejectsWith(c.custody.encryptJoinAccept({ handle }, Buffer.alloc(16)), 'KEY_NOT_FOUND');
        await rejectsWith(c.custody.deriveAndExport(handle, [{ block: Buffer.alloc(16), to: { clear: { peer: 'p', allowedBy: 'operator-peer-setting' } } }]), 'KEY_NOT_FOUND');
      });

      it('cannot be imported: importWrapped with usage receiving is refused (INVALID_KEY) and nothing is stored', async () => {
        const kek = randomBytes(16);
        await c.importKek('receiving-import', kek);
        await refusedAndUnchanged(() => c.custody.importWrapped('receiving/forged', 'receiving', aesKeyWrap(kek, randomBytes(16)), 'receiving-import'), 'INVALID_KEY', ['receiving/forged']);
      });

      it('a second receiving key is listed beside the first, oldest first; deleting it removes it (listReceivingKeys, listKeys) and batches sealed to it are refused (KEY_NOT_FOUND)', async () => {
        const second = await c.custody.createReceivingKey();
        assert.notEqual(second.kid, receiving.kid);
        const kids = (await c.custody.listReceivingKeys()).map((k) => k.kid);
        assert.ok(kids.indexOf(receiving.kid) >= 0 && kids.indexOf(receiving.kid) < kids.indexOf(second.kid), `oldest first: ${kids.join(', ')}`);
        await c.custody.deleteKey(receivingKeyHandle(second.kid));
        assert.ok(!(await c.custody.listReceivingKeys()).some((k) => k.kid === second.kid));
        assert.ok(!(await c.custody.listKeys()).some((k) => k.handle === receivingKeyHandle(second.kid)));
        assert.equal(await c.custody.hasKey(receivingKeyHandle(second.kid)), false);
        const keys = deviceKeys('to-deleted', 2);
        await refusedAndUnchanged(() => c.custody.importSealed(sealKeys(second, keys).input), 'KEY_NOT_FOUND', keys.map((k) => k.handle));
      });
    });

    describe('importSealed', () => {
      it('RSA-OAEP (SHA-1): every key of the batch is held as a root key, and MIC and AES under it equal node:crypto with the clear key; the input is not changed', async () => {
        const keys = deviceKeys('sealed-sha1', 12);
        const { input } = sealKeys(receiving, keys);
        const unchanged = watchInputs(input.batchKey.encrypted, ...input.keys.map((k) => k.wrapped));
        await c.custody.importSealed(input);
        unchanged();
        const listed = new Map((await c.custody.listKeys()).map((k) => [k.handle, k.usage]));
        for (const k of keys) assert.equal(listed.get(k.handle), 'root', `${k.handle} listed as a root key`);
        for (const k of keys) await assertSameKey(c.custody, k.handle, k.key);
      });

      it('RSA-OAEP-256 (SHA-256): imported where the custody can unwrap it (the software keystore must), otherwise refused with MECHANISM_UNSUPPORTED naming RSA-OAEP (SHA-1), nothing imported', async () => {
        const keys = deviceKeys('sealed-sha256', 4);
        const { input } = sealKeys(receiving, keys, 'sha256');
        const before = handles(await c.custody.listKeys());
        try {
          await c.custody.importSealed(input);
        } catch (error) {
          assert.ok(error instanceof CustodyError && error.code === 'MECHANISM_UNSUPPORTED', `expected MECHANISM_UNSUPPORTED, got ${String(error)}`);
          assert.notEqual(c.custody.kind, 'software', 'the software keystore unwraps RSA-OAEP-256');
          assert.match(error.message, /RSA-OAEP.*SHA-1/);
          assert.deepEqual(handles(await c.custody.listKeys()), before);
          return;
        }
        for (const k of keys) await assertSameKey(c.custody, k.handle, k.key);
      });

      it('a batch with no keys imports nothing and is not an error', async () => {
        const before = handles(await c.custody.listKeys());
        await c.custody.importSealed(sealKeys(receiving, []).input);
        assert.deepEqual(handles(await c.custody.listKeys()), before);
      });

      describe('refusals: nothing is imported', () => {
        it('the batch key sealed to another RSA key (UNWRAP_FAILED)', async () => {
          const keys = deviceKeys('other-rsa', 4);
          const other = generateKeyPairSync('rsa', { modulusLength: 3072 }).publicKey.export({ format: 'jwk' }) as { kty: 'RSA'; n: string; e: string };
          const { input, batchKey } = sealKeys(receiving, keys);
          await refusedAndUnchanged(() => c.custody.importSealed({ ...input, batchKey: { oaep: 'sha1', encrypted: sealBatchKey(other, 'sha1', batchKey) } }), 'UNWRAP_FAILED', keys.map((k) => k.handle));
        });

        it('a corrupted batch-key ciphertext (UNWRAP_FAILED)', async () => {
          const keys = deviceKeys('bad-rsa', 4);
          const { input } = sealKeys(receiving, keys);
          const encrypted = Buffer.from(input.batchKey.encrypted);
          encrypted[100] = (encrypted[100] ?? 0) ^ 0x01;
          await refusedAndUnchanged(() => c.custody.importSealed({ ...input, batchKey: { oaep: 'sha1', encrypted } }), 'UNWRAP_FAILED', keys.map((k) => k.handle));
        });

        it('keys wrapped under another batch key than the one sealed (UNWRAP_FAILED)', async () => {
          const keys = deviceKeys('wrong-batch-key', 4);
          const { input } = sealKeys(receiving, keys);
          const otherBatchKey = randomBytes(32);
          await refusedAndUnchanged(
            () => c.custody.importSealed({ ...input, keys: keys.map((k) => ({ handle: k.handle, usage: k.usage, wrapped: wrap256(otherBatchKey, k.key) })) }),
            'UNWRAP_FAILED',
            keys.map((k) => k.handle),
          );
        });

        it('a truncated wrapped key (UNWRAP_FAILED)', async () => {
          const keys = deviceKeys('truncated', 4);
          const { input } = sealKeys(receiving, keys);
          const truncated = input.keys.map((k, i) => (i === 2 ? { ...k, wrapped: k.wrapped.subarray(0, 23) } : k));
          await refusedAndUnchanged(() => c.custody.importSealed({ ...input, keys: truncated }), 'UNWRAP_FAILED', keys.map((k) => k.handle));
        });

        it('one corrupted key among 40: none of the 40 is imported, also those before it (UNWRAP_FAILED)', async () => {
          const keys = deviceKeys('one-bad', 40);
          const { input } = sealKeys(receiving, keys);
          const corrupted = input.keys.map((k, i) => {
            if (i !== 33) return k;
            const w = Buffer.from(k.wrapped);
            w[10] = (w[10] ?? 0) ^ 0x80;
            return { ...k, wrapped: w };
          });
          await refusedAndUnchanged(() => c.custody.importSealed({ ...input, keys: corrupted }), 'UNWRAP_FAILED', keys.map((k) => k.handle));
        });

        it('an unknown receiving kid (KEY_NOT_FOUND)', async () => {
          const keys = deviceKeys('unknown-kid', 2);
          const { input } = sealKeys(receiving, keys);
          await refusedAndUnchanged(() => c.custody.importSealed({ ...input, receivingKid: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }), 'KEY_NOT_FOUND', keys.map((k) => k.handle));
        });

        it('a key that is not 16 bytes (INVALID_KEY)', async () => {
          const keys = deviceKeys('long-key', 3);
          const { input, batchKey } = sealKeys(receiving, keys);
          const long = input.keys.map((k, i) => (i === 1 ? { ...k, wrapped: wrap256(batchKey, randomBytes(32)) } : k));
          await refusedAndUnchanged(() => c.custody.importSealed({ ...input, keys: long }), 'INVALID_KEY', keys.map((k) => k.handle));
        });

        it('a handle already held (KEY_EXISTS), and the key held before stays in use', async () => {
          const [held] = deviceKeys('held', 1);
          await c.custody.importSealed(sealKeys(receiving, [held!]).input);
          const keys = [...deviceKeys('dup-held', 3), { ...held!, key: randomBytes(16) }];
          await refusedAndUnchanged(() => c.custody.importSealed(sealKeys(receiving, keys).input), 'KEY_EXISTS', keys.slice(0, 3).map((k) => k.handle));
          await assertSameKey(c.custody, held!.handle, held!.key);
        });

        it('a handle named twice in one batch (KEY_EXISTS)', async () => {
          const keys = deviceKeys('named-twice', 3);
          await refusedAndUnchanged(() => c.custody.importSealed(sealKeys(receiving, [...keys, { ...keys[0]!, key: randomBytes(16) }]).input), 'KEY_EXISTS', keys.map((k) => k.handle));
        });
      });
    });

    describe('importDerived (JK-KDF-1) from a derivation master key sealed in a batch', () => {
      const master = randomBytes(16);
      const masterHandle = derivationKeyHandle(`vendor-${randomBytes(4).toString('hex')}`);
      before(async () => {
        await c.custody.importSealed(sealKeys(receiving, [{ handle: masterHandle, usage: 'derivation', key: master }]).input);
      });

      it('the master is held as a derivation key, and is refused as a root key', async () => {
        assert.equal((await c.custody.listKeys()).find((k) => k.handle === masterHandle)?.usage, 'derivation');
        await assert.rejects(c.custody.computeMic({ handle: masterHandle }, Buffer.alloc(19)), CustodyError);
        await assert.rejects(c.custody.encryptJoinAccept({ handle: masterHandle }, Buffer.alloc(16)), CustodyError);
      });

      it('each derived root key equals AES-128-ECB(master, block) as node:crypto computes it: CMAC and AES under it match', async () => {
        const devEuis = ['70B3D57ED0000001', '70B3D57ED0000002', '0004A30B001C0530'];
        const wanted = devEuis.flatMap((devEui) =>
          (['AppKey', 'NwkKey'] as const).map((name) => ({ handle: rootKeyHandle(devEui, name, 'derived'), block: kdfBlock(devEui, name) })),
        );
        const unchanged = watchInputs(...wanted.map((w) => w.block));
        await c.custody.importDerived({ master: masterHandle, keys: wanted });
        unchanged();
        const listed = new Map((await c.custody.listKeys()).map((k) => [k.handle, k.usage]));
        for (const w of wanted) {
          assert.equal(listed.get(w.handle), 'root');
          await assertSameKey(c.custody, w.handle, aes128EcbEncrypt(master, w.block));
        }
      });

      it('refusals, nothing derived: unknown master or a root key as master (KEY_NOT_FOUND), a block that is not 16 bytes (INVALID_KEY), a handle held or named twice (KEY_EXISTS)', async () => {
        const devEui = '70B3D57ED00000FF';
        const key = { handle: rootKeyHandle(devEui, 'AppKey', 'refused'), block: kdfBlock(devEui, 'AppKey') };
        const other = { handle: rootKeyHandle(devEui, 'NwkKey', 'refused'), block: kdfBlock(devEui, 'NwkKey') };
        await refusedAndUnchanged(() => c.custody.importDerived({ master: derivationKeyHandle('nobody'), keys: [key] }), 'KEY_NOT_FOUND', [key.handle]);
        const [root] = deviceKeys('not-a-master', 1);
        await c.custody.importSealed(sealKeys(receiving, [root!]).input);
        await refusedAndUnchanged(() => c.custody.importDerived({ master: root!.handle, keys: [key] }), 'KEY_NOT_FOUND', [key.handle]);
        await refusedAndUnchanged(() => c.custody.importDerived({ master: masterHandle, keys: [key, { ...other, block: other.block.subarray(0, 15) }] }), 'INVALID_KEY', [key.handle, other.handle]);
        await refusedAndUnchanged(() => c.custody.importDerived({ master: masterHandle, keys: [key, { ...other, handle: root!.handle }] }), 'KEY_EXISTS', [key.handle]);
        await refusedAndUnchanged(() => c.custody.importDerived({ master: masterHandle, keys: [key, { ...other, handle: key.handle }] }), 'KEY_EXISTS', [key.handle]);
      });
    });

    describe('deleteKeys', () => {
      it('deletes every named key in one call (operations then refused, KEY_NOT_FOUND), keeps the others, ignores handles not held', async () => {
        const keys = deviceKeys('bulk-delete', 6);
        await c.custody.importSealed(sealKeys(receiving, keys).input);
        const [gone, kept] = [keys.slice(0, 4), keys.slice(4)];
        await c.custody.computeMic({ handle: gone[0]!.handle }, Buffer.alloc(19)); // used once, so it may be cached
        await c.custody.deleteKeys([...gone.map((k) => k.handle), 'root/never/AppKey/held']);
        const held = new Set(handles(await c.custody.listKeys()));
        for (const k of gone) assert.equal(held.has(k.handle), false, `${k.handle} deleted`);
        for (const k of kept) assert.equal(held.has(k.handle), true, `${k.handle} kept`);
        await rejectsWith(c.custody.computeMic({ handle: gone[0]!.handle }, Buffer.alloc(19)), 'KEY_NOT_FOUND');
        for (const k of kept) await assertSameKey(c.custody, k.handle, k.key);
        await c.custody.deleteKeys([]);
        // The handles can be imported again.
        await c.custody.importSealed(sealKeys(receiving, gone).input);
        await assertSameKey(c.custody, gone[1]!.handle, gone[1]!.key);
      });
    });

    describe('exportSealed (Join Server to Join Server)', () => {
      it('software keystore: root keys sealed to the recipient (RSA-OAEP, then RFC 3394 under the batch key) open with the recipient\'s private key to the clear keys; PKCS#11: refused (EXPORT_REFUSED) explaining trusted wrapping', async () => {
        const keys = deviceKeys('export', 3);
        await c.custody.importSealed(sealKeys(receiving, keys).input);
        const recipient = generateKeyPairSync('rsa', { modulusLength: 3072 });
        const pub = recipient.publicKey.export({ format: 'jwk' }) as { n: string; e: string };
        const jwk: JsonWebKeyRsaPublic = { kty: 'RSA', n: pub.n, e: pub.e, alg: 'RSA-OAEP-256', use: 'enc', kid: await calculateJwkThumbprint({ kty: 'RSA', n: pub.n, e: pub.e }) };
        for (const oaep of ['sha1', 'sha256'] as const) {
          let exported: { encryptedBatchKey: Buffer; wrapped: Buffer[] };
          try {
            exported = await c.custody.exportSealed(jwk, oaep, keys.map((k) => k.handle));
          } catch (error) {
            assert.ok(error instanceof CustodyError && error.code === 'EXPORT_REFUSED', `expected EXPORT_REFUSED, got ${String(error)}`);
            assert.notEqual(c.custody.kind, 'software', 'the software keystore exports');
            assert.match(error.message, /trusted wrapping/);
            continue;
          }
          const batchKey = privateDecrypt({ key: recipient.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: oaep }, exported.encryptedBatchKey);
          assert.equal(batchKey.length, 32);
          assert.equal(exported.wrapped.length, keys.length);
          keys.forEach((k, i) => assert.deepEqual(unwrap256(batchKey, exported.wrapped[i]!), k.key));
        }
      });

      it('software keystore: an export to this installation\'s own receiving key imports back (under new handles) as the same keys', async (t) => {
        if (c.custody.kind !== 'software') {
          await rejectsWith(c.custody.exportSealed(receiving.jwk, 'sha1', []), 'EXPORT_REFUSED');
          t.diagnostic('PKCS#11 custody refuses exports (checked above)');
          return;
        }
        const keys = deviceKeys('round-trip', 2);
        await c.custody.importSealed(sealKeys(receiving, keys).input);
        const exported = await c.custody.exportSealed(receiving.jwk, 'sha256', keys.map((k) => k.handle));
        const moved = keys.map((k) => ({ ...k, handle: `${k.handle}-moved` }));
        await c.custody.importSealed({
          receivingKid: receiving.kid,
          batchKey: { oaep: 'sha256', encrypted: exported.encryptedBatchKey },
          keys: moved.map((k, i) => ({ handle: k.handle, usage: 'root', wrapped: exported.wrapped[i]! })),
        });
        for (const k of moved) await assertSameKey(c.custody, k.handle, k.key);
      });

      it('refusals before any work: a recipient that is not an RSA key of ≥ 2048 bits or whose kid is not its thumbprint (INVALID_KEY); software: an unknown handle or a non-root key (KEY_NOT_FOUND)', async () => {
        const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'jwk' }) as { n: string; e: string };
        await rejectsWith(c.custody.exportSealed({ ...receiving.jwk, n: small.n, kid: await calculateJwkThumbprint({ kty: 'RSA', n: small.n, e: small.e }) }, 'sha1', []), 'INVALID_KEY');
        await rejectsWith(c.custody.exportSealed({ ...receiving.jwk, kid: 'not-its-thumbprint' }, 'sha1', []), 'INVALID_KEY');
        await rejectsWith(c.custody.exportSealed({ kty: 'EC' } as unknown as JsonWebKeyRsaPublic, 'sha1', []), 'INVALID_KEY');
        if (c.custody.kind === 'software') {
          await rejectsWith(c.custody.exportSealed(receiving.jwk, 'sha1', ['root/none/AppKey/x']), 'KEY_NOT_FOUND');
          await rejectsWith(c.custody.exportSealed(receiving.jwk, 'sha1', [receivingKeyHandle(receiving.kid)]), 'KEY_NOT_FOUND');
        }
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// The software keystore's own guarantees: sealing at rest and the master key.

for (const backend of storageBackends) {
  describe(`software keystore / sealed records on ${backend.name}`, () => {
    let storage: Storage;
    let cleanup: () => Promise<void>;
    let masterKey: Buffer;
    let custody: SoftwareKeyCustody;
    beforeEach(async () => {
      const opened = await backend.open();
      storage = opened.storage;
      cleanup = opened.cleanup;
      masterKey = randomBytes(32);
      custody = new SoftwareKeyCustody(storage, masterKey);
    });
    afterEach(async () => {
      await custody.close();
      await cleanup();
    });

    const rootKey = randomBytes(16);
    const kek = randomBytes(16);
    const handle = rootKeyHandle(A.devEui, 'AppKey', 'sealed');

    async function provision(): Promise<void> {
      await custody.importKek('k', kek);
      await custody.importWrapped(handle, 'root', aesKeyWrap(kek, rootKey), 'k');
    }

    it('sealed records never contain the key bytes (root key and KEK), nor the master key', async () => {
      await provision();
      for (const h of [handle, kekHandle('k')]) {
        const record = await storage.getKeyRecord(h);
        assert.ok(record, `a record for ${h}`);
        for (const secret of [rootKey, kek, masterKey]) {
          assert.equal(record.sealed.includes(secret), false, `${h} holds a secret in clear`);
          assert.equal(record.sealed.includes(Buffer.from(secret.toString('hex'))), false);
          assert.equal(record.sealed.includes(Buffer.from(secret.toString('hex').toUpperCase())), false);
        }
      }
    });

    it('the custody does not keep a reference to the caller\'s master key buffer (zeroing it on close does not touch the caller\'s copy)', async () => {
      const copy = Buffer.from(masterKey);
      await provision();
      await custody.close();
      assert.deepEqual(masterKey, copy);
      custody = new SoftwareKeyCustody(storage, masterKey);
    });

    it('a sealed record moved to another handle fails to open (SEALED_RECORD_CORRUPT)', async () => {
      await provision();
      const record = await storage.getKeyRecord(handle);
      assert.ok(record);
      const moved = rootKeyHandle(A.devEui, 'AppKey', 'moved');
      await storage.insertKeyRecord({ handle: moved, usage: 'root', sealed: record.sealed, createdAt: new Date() });
      await rejectsWith(custody.computeMic({ handle: moved }, Buffer.alloc(19)), 'SEALED_RECORD_CORRUPT');
      // The original still opens.
      await custody.computeMic({ handle }, Buffer.alloc(19));
    });

    it('a KEK record moved to a root handle fails to open (usage is bound too)', async () => {
      await provision();
      const record = await storage.getKeyRecord(kekHandle('k'));
      assert.ok(record);
      await storage.insertKeyRecord({ handle: 'root/moved-kek', usage: 'root', sealed: record.sealed, createdAt: new Date() });
      await rejectsWith(custody.computeMic({ handle: 'root/moved-kek' }, Buffer.alloc(19)), 'SEALED_RECORD_CORRUPT');
    });

    it('a sealed record with one bit flipped fails to open (SEALED_RECORD_CORRUPT)', async () => {
      await provision();
      const record = await storage.getKeyRecord(handle);
      assert.ok(record);
      const sealed = Buffer.from(record.sealed);
      sealed[14] = (sealed[14] ?? 0) ^ 0x01;
      await storage.insertKeyRecord({ handle: 'root/flipped', usage: 'root', sealed, createdAt: new Date() });
      await rejectsWith(custody.computeMic({ handle: 'root/flipped' }, Buffer.alloc(19)), 'SEALED_RECORD_CORRUPT');
    });

    it('a wrong master key fails to open every record (SEALED_RECORD_CORRUPT)', async () => {
      await provision();
      const other = new SoftwareKeyCustody(storage, randomBytes(32));
      try {
        await rejectsWith(other.computeMic({ handle }, Buffer.alloc(19)), 'SEALED_RECORD_CORRUPT');
        await rejectsWith(other.importWrapped('root/z', 'root', aesKeyWrap(kek, rootKey), 'k'), 'SEALED_RECORD_CORRUPT');
      } finally {
        await other.close();
      }
    });

    it('the same master key opens the records from a new instance (keys persist)', async () => {
      await provision();
      const again = new SoftwareKeyCustody(storage, masterKey);
      try {
        const micInput = randomBytes(19);
        assert.deepEqual(await again.computeMic({ handle }, micInput), await custody.computeMic({ handle }, micInput));
      } finally {
        await again.close();
      }
    });

    it('a master key that is not 32 bytes is refused (MASTER_KEY_INVALID)', () => {
      assert.throws(() => new SoftwareKeyCustody(storage, randomBytes(16)), (e: unknown) => e instanceof CustodyError && e.code === 'MASTER_KEY_INVALID');
    });
  });
}

describe('software keystore / master key', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'joinkeep-master-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const goodHex = randomBytes(32).toString('hex');

  it('createMasterKeyFile writes 64 hex digits with mode 0600, and loadMasterKey reads the same 32 bytes back', async () => {
    const file = join(dir, 'created.key');
    await createMasterKeyFile(file);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const text = await readFile(file, 'utf8');
    assert.match(text, /^[0-9a-f]{64}\n$/);
    const key = await loadMasterKey({ file });
    assert.equal(key.length, 32);
    assert.equal(key.toString('hex'), text.trim());
  });

  it('createMasterKeyFile refuses to overwrite an existing file, which keeps its content', async () => {
    const file = join(dir, 'existing.key');
    await createMasterKeyFile(file);
    const before = await readFile(file, 'utf8');
    await assert.rejects(createMasterKeyFile(file));
    assert.equal(await readFile(file, 'utf8'), before);
  });

  for (const mode of [0o640, 0o604, 0o660, 0o644]) {
    it(`loadMasterKey refuses a file readable by group or others (mode ${mode.toString(8)}) (MASTER_KEY_INVALID)`, async () => {
      const file = join(dir, `mode-${mode.toString(8)}.key`);
      await writeFile(file, `${goodHex}\n`);
      await chmod(file, mode);
      await rejectsWith(loadMasterKey({ file }), 'MASTER_KEY_INVALID');
    });
  }

  for (const [what, text] of [
    ['63 hex digits', goodHex.slice(1)],
    ['65 hex digits', `${goodHex}0`],
    ['a non-hex digit', `${goodHex.slice(1)}g`],
    ['an empty file', ''],
    ['base64 instead of hex', Buffer.from(goodHex, 'hex').toString('base64')],
  ] as const) {
    it(`loadMasterKey refuses a malformed file: ${what} (MASTER_KEY_INVALID), and the message does not echo the content`, async () => {
      const file = join(dir, `bad-${what.replace(/\W+/g, '-')}.key`);
      await writeFile(file, text, { mode: 0o600 });
      await chmod(file, 0o600);
      await assert.rejects(loadMasterKey({ file }), (e: unknown) => {
        assert.ok(e instanceof CustodyError && e.code === 'MASTER_KEY_INVALID');
        if (text.length > 8) assert.equal(e.message.includes(text.slice(0, 16)), false, 'the error message echoes the key file content');
        return true;
      });
    });
  }

  it('loadMasterKey refuses a missing file (MASTER_KEY_INVALID)', async () => {
    await rejectsWith(loadMasterKey({ file: join(dir, 'absent.key') }), 'MASTER_KEY_INVALID');
  });

  it('loadMasterKey accepts a 0600 file with surrounding whitespace and upper-case hex', async () => {
    const file = join(dir, 'upper.key');
    await writeFile(file, `  ${goodHex.toUpperCase()}\n\n`, { mode: 0o600 });
    assert.equal((await loadMasterKey({ file })).toString('hex'), goodHex);
  });

  it('loadMasterKey accepts the environment variant, and refuses it when unset or malformed', async () => {
    assert.equal((await loadMasterKey({ env: 'JK_TEST_MASTER' }, { JK_TEST_MASTER: goodHex })).toString('hex'), goodHex);
    await rejectsWith(loadMasterKey({ env: 'JK_TEST_MASTER' }, {}), 'MASTER_KEY_INVALID');
    await rejectsWith(loadMasterKey({ env: 'JK_TEST_MASTER' }, { JK_TEST_MASTER: goodHex.slice(2) }), 'MASTER_KEY_INVALID');
  });
});
