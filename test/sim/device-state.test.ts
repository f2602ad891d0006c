import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { eui64FromBeHex } from '../../src/protocol/index.js';
import { SimulatedDevice } from '../../sim/device.js';
import { loadDeviceState, saveDeviceState } from '../../sim/device-state.js';
import { hex, vectors } from './helpers/vectors.js';

const B = vectors.B;
const devEui = eui64FromBeHex(B.devEui);
const joinEui = eui64FromBeHex(B.joinEui);

describe('device simulator / non-volatile state file', () => {
  it('absent file / factory-fresh state: DevNonce 0, JoinNonce 0, RJcount1 0, no session', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sim-state-'));
    try {
      const s = loadDeviceState(join(dir, 'd.json'), devEui, joinEui);
      assert.deepEqual([s.nextDevNonce, s.lastJoinNonce, s.nextRjCount1, s.session], [0, 0, 0, null]);
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  it('1.1 device / join then reload / counters and session survive, file mode 0600', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sim-state-'));
    const file = join(dir, 'd.json');
    try {
      const identity = { devEui, joinEui, macVersion: '1.1' as const, roots: { appKey: hex(B.appKey), nwkKey: hex(B.nwkKey) } };
      const d = new SimulatedDevice(identity, { ...loadDeviceState(file, devEui, joinEui), nextDevNonce: B.devNonce });
      d.joinRequest();
      assert.ok(d.receiveJoinAccept(hex(B.joinAccept)).accepted);
      saveDeviceState(file, d.state);
      assert.equal(statSync(file).mode & 0o777, 0o600);
      const again = new SimulatedDevice(identity, loadDeviceState(file, devEui, joinEui));
      assert.equal(again.state.nextDevNonce, B.devNonce + 1);
      assert.equal(again.state.lastJoinNonce, 1);
      assert.equal(again.rejoinRequest(1).toString('hex').toUpperCase(), vectors.D.rejoinRequest, 'a reloaded device continues where it stopped');
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  it('state file of another device / refused', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sim-state-'));
    const file = join(dir, 'd.json');
    try {
      saveDeviceState(file, new SimulatedDevice({ devEui, joinEui, macVersion: '1.0.3', roots: { appKey: hex(B.appKey) } }).state);
      assert.throws(() => loadDeviceState(file, eui64FromBeHex('0000000000000001'), joinEui), { name: 'DeviceStateError' });
    } finally {
      rmSync(dir, { recursive: true });
    }
  });
});
