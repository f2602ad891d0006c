import { Command, Option } from 'commander';
import { runActivation } from '../activation-flow.js';
import { saveDeviceState } from '../device-state.js';
import { activationReport } from '../report.js';
import {
  type AsOpts,
  type DeviceOpts,
  type NetworkOpts,
  type NsOpts,
  asOptions,
  deviceOptions,
  makeDevice,
  makeForwardingAs,
  makeNs,
  networkChoices,
  networkOptions,
  nsOptions,
} from './options.js';

type Opts = DeviceOpts & NsOpts & NetworkOpts & AsOpts & { showKeys?: boolean; type?: string };

/** `join` and `rejoin`: the device builds the frame, the NS sends it, the device judges the accept, keys compared. */
export function activationCommand(kind: 'join' | 'rejoin'): Command {
  const cmd = new Command(kind).description(
    kind === 'join'
      ? 'activate a device: Join-request as the device, JoinReq as the NS, Join-accept checked as the device, keys compared'
      : 'LoRaWAN 1.1 Rejoin-request (type 0, 1 or 2) as the device, RejoinReq as the NS, accept checked, keys compared',
  );
  for (const o of [...deviceOptions(), ...nsOptions(), ...networkOptions(), ...asOptions()]) cmd.addOption(o);
  if (kind === 'rejoin') cmd.addOption(new Option('--type <t>', 'rejoin type').choices(['0', '1', '2']).makeOptionMandatory());
  cmd.option('--show-keys', 'print key values (test keys only!)');
  return cmd.action(async (o: Opts) => {
    const device = makeDevice(o);
    if (!o.state && (device.identity.macVersion === '1.0.4' || device.identity.macVersion === '1.1')) {
      process.stderr.write('note: no --state file; the DevNonce counter starts at 0 on every run, as after a factory reset\n');
    }
    const ns = makeNs(o);
    const rejoinType = o.type === undefined ? undefined : (Number(o.type) as 0 | 1 | 2);
    process.stdout.write(`Join Server  ${o.url} (style ${ns.wire.style}, TS002 ${ns.wire.protocolVersion})\n`);
    process.stdout.write(`device       DevEUI ${device.identity.devEui}, JoinEUI ${device.identity.joinEui}, LoRaWAN ${device.identity.macVersion}\n`);
    const run = await runActivation(device, ns, makeForwardingAs(o, o), networkChoices(o), rejoinType, o.state ? (s) => saveDeviceState(o.state!, s) : undefined);
    process.stdout.write(`${activationReport(run, { showKeys: o.showKeys === true })}\n`);
    process.exitCode = run.ok ? 0 : 1;
  });
}
