import { type MacVersion, isLoRaWAN11 } from '../protocol/index.js';
import type { DeviceRecord } from '../storage/storage.js';
import { JoinError } from './errors.js';

/**
 * Which root key does what, from the device's provisioned version and the MACVersion the network
 * server asks for (spec-notes §1.8; LoRaWAN 1.1 §6.2; TS002-1.0 §8 step 3: MACVersion is the highest
 * version common to device and network).
 */
export interface SessionPlan {
  /** 'lorawan11': OptNeg=1, 1.1 derivations and JSIntKey MIC. 'legacy': 1.0.x formulas. */
  readonly scheme: 'legacy' | 'lorawan11';
  /** Key of the Join-request MIC and of Join-accept encryption: AppKey (1.0.x device) or NwkKey (1.1 device). */
  readonly nwkRoot: string;
  /** Root of the AppSKey: AppKey with OptNeg=1; with OptNeg=0 a 1.1 device derives it from NwkKey too. */
  readonly appRoot: string;
}

export function planSession(device: DeviceRecord, requested: MacVersion): SessionPlan {
  if (!isLoRaWAN11(device.macVersion)) {
    if (isLoRaWAN11(requested)) {
      throw new JoinError('MAC_VERSION_UNSUPPORTED', `device ${device.devEui} is LoRaWAN ${device.macVersion}; it cannot join as LoRaWAN 1.1`);
    }
    return { scheme: 'legacy', nwkRoot: device.appKeyHandle, appRoot: device.appKeyHandle };
  }
  const nwkKey = requireNwkKey(device);
  return isLoRaWAN11(requested)
    ? { scheme: 'lorawan11', nwkRoot: nwkKey, appRoot: device.appKeyHandle }
    : { scheme: 'legacy', nwkRoot: nwkKey, appRoot: nwkKey };
}

export function requireNwkKey(device: DeviceRecord): string {
  if (device.nwkKeyHandle === null) {
    throw new JoinError('MAC_VERSION_UNSUPPORTED', `device ${device.devEui} is LoRaWAN 1.1 but has no NwkKey`);
  }
  return device.nwkKeyHandle;
}

/** Root of the AppSKey of a stored session, for AppSKeyReq. */
export function appSKeyRoot(device: DeviceRecord, scheme: 'legacy' | 'lorawan11'): string {
  return scheme === 'legacy' && isLoRaWAN11(device.macVersion) ? requireNwkKey(device) : device.appKeyHandle;
}
