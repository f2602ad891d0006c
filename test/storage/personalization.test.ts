import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { Eui64 } from '../../src/protocol/index.js';
import { type BatchImport, type InventoryDevice, type MakerRecord, StorageError } from '../../src/storage/index.js';
import { JOIN_EUI, NET_ID, at, makeDevice, randomEui } from '../helpers/storage-fixtures.js';
import { type OpenedStorage, storageBackends } from '../helpers/storages.js';

/*
 * Makers, batches and the device inventory (docs/specs/sealed-batch.md) on every database: a batch is written all or
 * nothing, a batch id or a DevEUI that is already known writes nothing, and each refusal is checked to have changed
 * nothing.
 */

const maker = (name: string, keyId = `kid-${name}`): MakerRecord => ({
  name,
  kind: 'device-maker',
  keyId,
  publicJwk: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y' },
  createdAt: at(),
});

function inventory(makerName: string, batchId: string, devEui: Eui64 = randomEui()): InventoryDevice {
  return {
    devEui,
    joinEui: JOIN_EUI,
    macVersion: '1.0.3',
    appKeyHandle: `root/${devEui}/AppKey/0a0b0c0d`,
    nwkKeyHandle: null,
    maker: makerName,
    batchId,
    profile: 'th-sensor-v2',
    serialNumber: 'SN-1',
    claimCodeHash: 'A'.repeat(64),
    lastJoinNonce: 0,
    lastDevNonce: null,
    createdAt: at(1),
  };
}

function batchImport(makerName: string, devices: number, batchId: string = randomUUID()): BatchImport {
  const inv = Array.from({ length: devices }, () => inventory(makerName, batchId));
  return {
    batch: { batchId, maker: makerName, kind: 'device-keys', payloadSha256: 'B'.repeat(64), deviceCount: devices, createdAt: at(-5), importedAt: at(2) },
    inventory: inv,
    audit: [
      { at: at(2), actor: 'cli', action: 'batch.import', subject: `batch/${batchId}`, outcome: 'success', details: { devices } },
      ...inv.map((d) => ({ at: at(2), actor: 'cli', action: 'device.import', subject: `device/${d.devEui}`, outcome: 'success', details: { batchId } })),
    ],
  };
}

for (const backend of storageBackends) {
  describe(`${backend.name} / personalization`, () => {
    let opened: OpenedStorage;
    before(async () => {
      opened = await backend.open();
      await opened.storage.insertMaker(maker('acme'));
    });
    after(async () => {
      await opened.cleanup();
    });

    it('makers / registered once by name and by key id, found by both', async () => {
      const s = opened.storage;
      assert.deepEqual(await s.getMaker('acme'), maker('acme'));
      assert.deepEqual(await s.findMakerByKeyId('kid-acme'), maker('acme'));
      await assert.rejects(s.insertMaker(maker('acme', 'other-kid')), (e: unknown) => e instanceof StorageError && e.code === 'MAKER_EXISTS');
      await assert.rejects(s.insertMaker(maker('other', 'kid-acme')), (e: unknown) => e instanceof StorageError && e.code === 'MAKER_EXISTS');
      assert.deepEqual((await s.listMakers()).map((m) => m.name), ['acme']);
    });

    it('a batch of 1,200 devices / batch, inventory and audit written together, listed in pages', async () => {
      const s = opened.storage;
      const b = batchImport('acme', 1200);
      const auditBefore = (await s.listAudit({ action: 'device.import', limit: 1000 })).items.length;
      await s.importBatch(b);
      assert.deepEqual(await s.getBatch(b.batch.batchId), b.batch);
      const first = b.inventory[0]!;
      assert.deepEqual(await s.getInventoryDevice(first.devEui), first);
      const page1 = await s.listInventory({ batchId: b.batch.batchId, limit: 1000 });
      assert.equal(page1.items.length, 1000);
      assert.ok(page1.next);
      const page2 = await s.listInventory({ batchId: b.batch.batchId, limit: 1000, after: page1.next });
      assert.equal(page2.items.length, 200);
      assert.equal(page2.next, undefined);
      assert.equal((await s.listAudit({ action: 'device.import', limit: 1000 })).items.length, Math.min(1000, auditBefore + 1200));
      assert.equal((await s.listAudit({ subject: `batch/${b.batch.batchId}` })).items.length, 1);
      assert.deepEqual(await s.findKnownDevEuis([first.devEui, randomEui()]), [first.devEui]);
    });

    it('the same batch id again / BATCH_EXISTS, nothing written', async () => {
      const s = opened.storage;
      const b = batchImport('acme', 3);
      await s.importBatch(b);
      const again = batchImport('acme', 2, b.batch.batchId);
      await assert.rejects(s.importBatch(again), (e: unknown) => e instanceof StorageError && e.code === 'BATCH_EXISTS');
      for (const d of again.inventory) assert.equal(await s.getInventoryDevice(d.devEui), undefined);
      assert.equal((await s.listInventory({ batchId: b.batch.batchId })).items.length, 3);
    });

    it('a DevEUI already a device or in an inventory / DEVICE_EXISTS, nothing of the batch written', async () => {
      const s = opened.storage;
      const device = makeDevice();
      await s.insertDevice(device);
      const inInventory = batchImport('acme', 1);
      await s.importBatch(inInventory);
      for (const clash of [device.devEui, inInventory.inventory[0]!.devEui]) {
        const b = batchImport('acme', 5);
        const clashing: BatchImport = { ...b, inventory: [...b.inventory.slice(0, 4), { ...inventory('acme', b.batch.batchId, clash) }] };
        const auditBefore = (await s.listAudit({ subject: `batch/${b.batch.batchId}` })).items.length;
        await assert.rejects(s.importBatch(clashing), (e: unknown) => e instanceof StorageError && e.code === 'DEVICE_EXISTS' && e.message.includes(clash));
        assert.equal(await s.getBatch(b.batch.batchId), undefined);
        for (const d of b.inventory.slice(0, 4)) assert.equal(await s.getInventoryDevice(d.devEui), undefined);
        assert.equal((await s.listAudit({ subject: `batch/${b.batch.batchId}` })).items.length, auditBefore);
      }
    });

    it('a derivation master / stored with its batch, found by id', async () => {
      const s = opened.storage;
      const batchId = randomUUID();
      const key = { id: 'se-master-1', maker: 'acme', keyHandle: 'derivation/se-master-1', batchId, createdAt: at(3) };
      await s.importBatch({
        batch: { batchId, maker: 'acme', kind: 'derivation-master', payloadSha256: 'C'.repeat(64), deviceCount: 0, createdAt: at(), importedAt: at(3) },
        inventory: [],
        derivationKey: key,
        audit: [],
      });
      assert.deepEqual(await s.getDerivationKey('se-master-1'), key);
      assert.equal(await s.getDerivationKey('nope'), undefined);
    });

    it('binding inventory devices / they move to devices with the binding; one unknown DevEUI binds none', async () => {
      const s = opened.storage;
      const b = batchImport('acme', 3);
      await s.importBatch(b);
      const [d1, d2, d3] = b.inventory;
      const binding = { homeNetId: NET_ID, homeNsId: null, asId: 'as-1', roamingNetIds: null };
      const event = (devEui: string) => ({ at: at(9), actor: 'cli', action: 'device.bind', subject: `device/${devEui}`, outcome: 'success', details: {} });
      await assert.rejects(s.bindInventoryDevices([d1!.devEui, randomEui()], binding, [event(d1!.devEui)]), (e: unknown) => e instanceof StorageError && e.code === 'DEVICE_NOT_FOUND');
      assert.ok(await s.getInventoryDevice(d1!.devEui), 'nothing moved');
      assert.equal(await s.getDevice(d1!.devEui), undefined);
      assert.equal((await s.listAudit({ subject: `device/${d1!.devEui}`, action: 'device.bind' })).items.length, 0);
      const bound = await s.bindInventoryDevices([d1!.devEui, d2!.devEui], binding, [event(d1!.devEui), event(d2!.devEui)]);
      assert.deepEqual(bound.map((d) => d.devEui), [d1!.devEui, d2!.devEui]);
      const device = await s.getDevice(d2!.devEui);
      assert.equal(device?.appKeyHandle, d2!.appKeyHandle);
      assert.equal(device?.homeNetId, NET_ID);
      assert.equal(device?.asId, 'as-1');
      assert.equal(await s.getInventoryDevice(d2!.devEui), undefined);
      assert.ok(await s.getInventoryDevice(d3!.devEui));
      await assert.rejects(s.bindInventoryDevices([d1!.devEui], binding, []), (e: unknown) => e instanceof StorageError && e.code === 'DEVICE_NOT_FOUND', 'bound already');
    });

    it('a device handed over with its join state / bound with that JoinNonce counter and last DevNonce', async () => {
      const s = opened.storage;
      const b = batchImport('acme', 1);
      const carried: BatchImport = { ...b, inventory: [{ ...b.inventory[0]!, macVersion: '1.1', lastJoinNonce: 41, lastDevNonce: 17 }] };
      await s.importBatch(carried);
      const devEui = carried.inventory[0]!.devEui;
      await s.bindInventoryDevices([devEui], { homeNetId: NET_ID, homeNsId: null, asId: null, roamingNetIds: null }, []);
      assert.deepEqual(await s.getJoinState(devEui, JOIN_EUI), { lastJoinNonce: 41, lastDevNonce: 17, usedDevNonces: [], lastRjCount1: null });
    });

    it('a transfer confirmed / its devices (bound or not) and their join state leave; the key handles are returned; twice is refused', async () => {
      const s = opened.storage;
      await s.insertMaker({ ...maker('js-b', 'kid-js-b'), kind: 'join-server' });
      const b = batchImport('acme', 2);
      await s.importBatch(b);
      const [bound, unbound] = b.inventory;
      await s.bindInventoryDevices([bound!.devEui], { homeNetId: NET_ID, homeNsId: null, asId: null, roamingNetIds: null }, []);
      const transferId = randomUUID();
      await s.insertTransfer({ batchId: transferId, recipient: 'js-b', devEuis: [bound!.devEui, unbound!.devEui], state: 'pending', createdAt: at(20), confirmedAt: null });
      assert.equal((await s.getTransfer(transferId))?.state, 'pending');
      const event = { at: at(21), actor: 'cli', action: 'transfer.confirm', subject: `batch/${transferId}`, outcome: 'success', details: {} };
      const handles = await s.confirmTransfer(transferId, [event], at(21));
      assert.deepEqual(handles.sort(), [bound!.appKeyHandle, unbound!.appKeyHandle].sort());
      assert.equal(await s.getDevice(bound!.devEui), undefined);
      assert.equal(await s.getInventoryDevice(unbound!.devEui), undefined);
      assert.deepEqual(await s.getTransfer(transferId), { batchId: transferId, recipient: 'js-b', devEuis: [bound!.devEui, unbound!.devEui], state: 'confirmed', createdAt: at(20), confirmedAt: at(21) });
      await assert.rejects(s.confirmTransfer(transferId, [event], at(22)), (e: unknown) => e instanceof StorageError && e.code === 'BATCH_EXISTS');
      assert.equal((await s.listAudit({ subject: `batch/${transferId}` })).items.length, 1, 'the refused confirmation wrote nothing');
    });

    it('inventory cursor that is not one / RangeError', async () => {
      await assert.rejects(opened.storage.listInventory({ after: 'bm90LWEtY3Vyc29y' }), RangeError);
    });
  });
}
