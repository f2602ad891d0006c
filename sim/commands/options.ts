import { Option } from 'commander';
import {
  type MacVersion,
  devAddrFromBeHex,
  eui64FromBeHex,
  macVersions,
  netIdFromBeHex,
  parseHex,
  parseMacVersion,
} from '../../src/protocol/index.js';
import { ApplicationServerClient } from '../application-server.js';
import type { NetworkChoices } from '../activation-flow.js';
import { SimulatedDevice } from '../device.js';
import { type DeviceState, loadDeviceState } from '../device-state.js';
import { readKeyFile, readTokenFile } from '../key-material.js';
import { NetworkServerClient } from '../network-server.js';
import { type WireStyle, wireStyles } from '../wire-style.js';

/** Option sets shared by the join/rejoin/appskey/homens commands, and their conversion into simulator objects. */

export interface DeviceOpts { devEui: string; joinEui: string; macVersion: string; appKeyFile: string; nwkKeyFile?: string; state?: string }
export interface NsOpts { url: string; tokenFile: string; netId: string; nsId?: string; nsKekFile: string; nsKekLabel: string; style: WireStyle; protocolVersion?: '1.0' | '1.1' }
export interface NetworkOpts { networkMacVersion: string; devAddr?: string; dlSettings: string; rxDelay: string; cfList?: string }
export interface AsOpts { asKekFile?: string; asKekLabel?: string; asId?: string; asTokenFile?: string }

export const styleOption = (): Option => new Option('--style <style>', 'wire style of the peer').choices(wireStyles).default('tts');
export const protocolVersionOption = (): Option => new Option('--protocol-version <v>', 'TS002 ProtocolVersion (tts only; default 1.1 when --ns-id is given, else 1.0)').choices(['1.0', '1.1']);

export const deviceOptions = (): Option[] => [
  new Option('--dev-eui <hex>', 'DevEUI').makeOptionMandatory(),
  new Option('--join-eui <hex>', 'JoinEUI').makeOptionMandatory(),
  new Option('--mac-version <v>', `device LoRaWAN version (${macVersions.join(', ')})`).makeOptionMandatory(),
  new Option('--app-key-file <file>', 'AppKey (32 hex digits)').makeOptionMandatory(),
  new Option('--nwk-key-file <file>', 'NwkKey, LoRaWAN 1.1 devices'),
  new Option('--state <file>', 'device non-volatile state (DevNonce counter, last JoinNonce, RJcount1, session); created if absent'),
];

export const nsOptions = (): Option[] => [
  new Option('--url <url>', 'Join Server Backend Interfaces URL').makeOptionMandatory(),
  new Option('--token-file <file>', 'bearer token of the NS').makeOptionMandatory(),
  new Option('--net-id <hex>', 'NetID of the NS (SenderID)').makeOptionMandatory(),
  new Option('--ns-id <eui>', 'NSID of the NS (SenderNSID on TS002-1.1)'),
  new Option('--ns-kek-file <file>', 'KEK shared by the NS and the Join Server').makeOptionMandatory(),
  new Option('--ns-kek-label <label>', 'label of that KEK').makeOptionMandatory(),
  styleOption(),
  protocolVersionOption(),
];

export const networkOptions = (): Option[] => [
  new Option('--network-mac-version <v>', 'highest LoRaWAN version of the network (the JoinReq carries the lower of device and network)').default('1.1'),
  new Option('--dev-addr <hex>', 'DevAddr the NS assigns (default random)'),
  new Option('--dl-settings <hex>', 'DLSettings without OptNeg; OptNeg is set when MACVersion is 1.1').default('03'),
  new Option('--rx-delay <s>', 'RxDelay').default('1'),
  new Option('--cf-list <hex>', 'CFList, 16 bytes'),
];

export const asOptions = (): Option[] => [
  new Option('--as-kek-file <file>', 'KEK of the AS: unwrap the AppSKey and compare it with the device'),
  new Option('--as-kek-label <label>', 'expected KEKLabel of the AppSKey envelope (default: any)'),
];

export function makeDevice(o: DeviceOpts, state?: DeviceState): SimulatedDevice {
  const macVersion = parseMacVersion(o.macVersion, '--mac-version');
  const devEui = eui64FromBeHex(o.devEui, '--dev-eui');
  const joinEui = eui64FromBeHex(o.joinEui, '--join-eui');
  const roots = { appKey: readKeyFile(o.appKeyFile, 'AppKey file'), ...(o.nwkKeyFile ? { nwkKey: readKeyFile(o.nwkKeyFile, 'NwkKey file') } : {}) };
  return new SimulatedDevice({ devEui, joinEui, macVersion, roots }, state ?? (o.state ? loadDeviceState(o.state, devEui, joinEui) : undefined));
}

export function makeNs(o: NsOpts, withKek = true): NetworkServerClient {
  return new NetworkServerClient({
    url: o.url,
    token: readTokenFile(o.tokenFile),
    netId: netIdFromBeHex(o.netId, '--net-id'),
    nsId: o.nsId === undefined ? undefined : eui64FromBeHex(o.nsId, '--ns-id'),
    kek: withKek ? { label: o.nsKekLabel, key: readKeyFile(o.nsKekFile, 'NS KEK file') } : { label: '', key: Buffer.alloc(16) },
    style: o.style,
    protocolVersion: o.protocolVersion,
  });
}

/** The AS side of a join run: only unwraps the forwarded envelope, so no URL or token is needed. */
export function makeForwardingAs(o: AsOpts, ns: NsOpts): ApplicationServerClient | undefined {
  if (o.asKekFile === undefined) return undefined;
  return new ApplicationServerClient({ url: ns.url, token: '', asId: o.asId ?? '', kek: { label: o.asKekLabel ?? '', key: readKeyFile(o.asKekFile, 'AS KEK file') }, style: ns.style });
}

export function networkChoices(o: NetworkOpts): NetworkChoices {
  const rxDelay = Number(o.rxDelay);
  if (!Number.isInteger(rxDelay) || rxDelay < 0 || rxDelay > 15) throw new RangeError('--rx-delay must be 0..15');
  return {
    networkMacVersion: parseMacVersion(o.networkMacVersion, '--network-mac-version') as MacVersion,
    devAddr: o.devAddr === undefined ? undefined : devAddrFromBeHex(o.devAddr, '--dev-addr'),
    dlSettings: parseHex(o.dlSettings, '--dl-settings', 1)[0] ?? 0,
    rxDelay,
    cfList: o.cfList === undefined ? undefined : parseHex(o.cfList, '--cf-list', 16),
  };
}
