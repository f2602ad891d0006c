import type { Command } from 'commander';
import { bindInventoryDevices } from '../../provisioning/bind.js';
import { addDevice } from '../../provisioning/devices.js';
import { eui64FromBeHex } from '../../protocol/index.js';
import type { DeviceRecord } from '../../storage/storage.js';
import { NotFoundError, UsageError, print, withJoinkeep } from '../context.js';

function deviceJson(d: DeviceRecord) {
  return {
    devEui: d.devEui,
    joinEui: d.joinEui,
    macVersion: d.macVersion,
    homeNetId: d.homeNetId,
    homeNsId: d.homeNsId,
    asId: d.asId,
    roamingNetIds: d.roamingNetIds,
    createdAt: d.createdAt.toISOString(),
  };
}

export function registerDevice(program: Command): void {
  const device = program.command('device').description('devices and their join state (keys are never shown)');
  device
    .command('add')
    .description('provision a device; root keys arrive as TS002 KeyEnvelopes wrapped under a KEK added with `kek add`')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .requiredOption('--dev-eui <hex>', 'DevEUI, 16 hex digits')
    .requiredOption('--join-eui <hex>', 'JoinEUI (AppEUI), 16 hex digits')
    .requiredOption('--mac-version <version>', 'LoRaWAN version: 1.0.0 … 1.0.4 or 1.1')
    .requiredOption('--home-net-id <hex>', 'NetID of the home network, the only one that may activate the device')
    .option('--home-ns-id <eui>', 'NSID of the home network server (TS002-1.1)')
    .option('--as-id <id>', 'AS-ID of the application server that receives the AppSKey')
    .option('--roaming-net-ids <list>', 'comma-separated NetIDs allowed to learn the home network by HomeNSReq (default: any registered network)')
    .requiredOption('--app-key <envelope>', 'AppKey as KeyEnvelope JSON {"KEKLabel":"…","AESKey":"…"}')
    .option('--nwk-key <envelope>', 'NwkKey as KeyEnvelope JSON (LoRaWAN 1.1 devices)')
    .action(async (o: { dataDir?: string; devEui: string; joinEui: string; macVersion: string; homeNetId: string; homeNsId?: string; asId?: string; roamingNetIds?: string; appKey: string; nwkKey?: string }) => {
      const roamingNetIds = o.roamingNetIds === undefined ? undefined : o.roamingNetIds.split(',').map((s) => s.trim()).filter(Boolean);
      const d = await withJoinkeep(o, (jk) =>
        addDevice({ storage: jk.storage, custody: jk.custody, audit: jk.audit, actor: 'cli' }, { ...o, roamingNetIds }),
      );
      process.stdout.write(`Added device ${d.devEui} (LoRaWAN ${d.macVersion}, JoinEUI ${d.joinEui}, home NetID ${d.homeNetId}${d.asId ? `, AS ${d.asId}` : ''}).\n`);
    });
  device
    .command('bind')
    .description('bind devices of the inventory (imported from sealed batches) to a home network and AS, so they can be activated')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--dev-eui <list>', 'comma-separated DevEUIs of inventory devices')
    .option('--batch <id>', 'every device of this batch still in the inventory')
    .requiredOption('--home-net-id <hex>', 'NetID of the home network, the only one that may activate the devices')
    .option('--home-ns-id <eui>', 'NSID of the home network server (TS002-1.1)')
    .option('--as-id <id>', 'AS-ID of the application server that receives the AppSKeys')
    .option('--roaming-net-ids <list>', 'comma-separated NetIDs allowed to learn the home network by HomeNSReq (default: any registered network)')
    .action(async (o: { dataDir?: string; devEui?: string; batch?: string; homeNetId: string; homeNsId?: string; asId?: string; roamingNetIds?: string }) => {
      const list = (v: string | undefined) => (v === undefined ? undefined : v.split(',').map((s) => s.trim()).filter(Boolean));
      const bound = await withJoinkeep(o, (jk) =>
        bindInventoryDevices({ storage: jk.storage, actor: 'cli' }, { devEuis: list(o.devEui), batchId: o.batch, homeNetId: o.homeNetId, homeNsId: o.homeNsId, asId: o.asId, roamingNetIds: list(o.roamingNetIds) }),
      );
      process.stdout.write(`Bound ${bound.length} device(s) to home NetID ${bound[0]!.homeNetId}${bound[0]!.asId ? `, AS ${bound[0]!.asId}` : ''}.\n`);
    });
  device
    .command('show')
    .description('show a device, its join state per JoinEUI and its recent sessions')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .requiredOption('--dev-eui <hex>', 'DevEUI')
    .option('--json', 'print JSON')
    .action(async (o: { dataDir?: string; devEui: string; json?: boolean }) => {
      const devEui = parseEui(o.devEui);
      const view = await withJoinkeep(o, async (jk) => {
        const d = await jk.storage.getDevice(devEui);
        if (!d) throw new NotFoundError(`no device ${devEui}`);
        const state = await jk.storage.getJoinState(d.devEui, d.joinEui);
        const sessions = await jk.storage.listSessions(d.devEui);
        return {
          ...deviceJson(d),
          joinState: state,
          sessions: sessions.map((s) => ({ sessionKeyId: s.sessionKeyId, joinNonce: s.joinNonce, devNonce: s.devNonce, scheme: s.scheme, netId: s.netId, devAddr: s.devAddr, createdAt: s.createdAt.toISOString() })),
        };
      });
      print(!!o.json, view, () =>
        [
          `DevEUI      ${view.devEui}`,
          `JoinEUI     ${view.joinEui}`,
          `LoRaWAN     ${view.macVersion}`,
          `Home NetID  ${view.homeNetId}${view.homeNsId ? ` (NSID ${view.homeNsId})` : ''}`,
          `AS-ID       ${view.asId ?? '-'}`,
          `JoinNonce   last ${view.joinState.lastJoinNonce}`,
          `DevNonce    last ${view.joinState.lastDevNonce ?? '-'}`,
          `RJcount1    last ${view.joinState.lastRjCount1 ?? '-'}`,
          `Sessions    ${view.sessions.map((s) => `${s.sessionKeyId} (JoinNonce ${s.joinNonce})`).join(', ') || '-'}`,
        ].join('\n'),
      );
    });
  device
    .command('list')
    .description('list devices')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--limit <n>', 'page size', '100')
    .option('--after <cursor>', 'cursor from the previous page')
    .option('--json', 'print JSON')
    .action(async (o: { dataDir?: string; limit: string; after?: string; json?: boolean }) => {
      const page = await withJoinkeep(o, (jk) => jk.storage.listDevices({ limit: Number(o.limit), after: o.after }));
      const items = page.items.map(deviceJson);
      print(!!o.json, { items, next: page.next }, () =>
        [...items.map((d) => `${d.devEui}\t${d.joinEui}\t${d.macVersion}\t${d.homeNetId}\t${d.asId ?? '-'}`), ...(page.next ? [`(more: --after ${page.next})`] : [])].join('\n') || 'No devices.',
      );
    });
}

function parseEui(text: string) {
  try {
    return eui64FromBeHex(text, '--dev-eui');
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}
