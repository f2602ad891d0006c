import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { BulkClaimResult, ClaimOutcome } from '../../commissioning/claims.js';
import type { DeviceView, ActivationView } from '../../commissioning/device-views.js';
import type { TransferView } from '../../commissioning/ownership-transfers.js';
import { UsageError, print } from '../context.js';
import { type RemoteOptions, addRemoteOptions, remoteApi } from '../remote.js';

/*
 * What an organisation does with its devices, through the REST API of a (remote) Joinkeep with its API key
 * (docs/commissioning.md): claim, bind, unbind, unclaim, transfer to another organisation, and look at devices.
 */

type Json = { json?: boolean };
const splitList = (v: string): string[] => v.split(',').map((s) => s.trim()).filter((s) => s !== '');
const enc = encodeURIComponent;

function deviceLine(d: DeviceView): string {
  const b = d.binding;
  return `${d.devEui}\t${d.macVersion}\t${d.owner ?? '(unclaimed)'}\t${b === null ? 'unbound' : `home ${b.homeNetId}${b.homeNsId ? `/${b.homeNsId}` : ''}${b.asId ? `, AS ${b.asId}` : ''}`}`;
}

export function registerClaim(program: Command): void {
  addRemoteOptions(
    program
      .command('claim')
      .description('claim devices for your organisation: by DevEUI and claim code, by TR005 QR code, or a whole manifest')
      .option('--dev-eui <eui>', 'the device\'s DevEUI (with --claim-code)')
      .option('--claim-code <code>', 'the claim code printed for the device (dashes optional)')
      .option('--qr <text>', 'the device\'s TR005 QR code content (LW:D0:…)')
      .option('--manifest <file>', 'claim every device of a maker\'s manifest (JSON or CSV) in one request')
      .option('--no-lock', 'leave the claim code usable: the device can be claimed away with it')
      .option('--regenerate', 'replace each claim code with a new one (printed once)')
      .option('--json', 'print JSON'),
  ).action(async (o: RemoteOptions & Json & { devEui?: string; claimCode?: string; qr?: string; manifest?: string; lock: boolean; regenerate?: boolean }) => {
    const api = await remoteApi(o);
    const options = { lock: o.lock, regenerate: o.regenerate === true };
    if (o.manifest !== undefined) {
      if (o.devEui || o.claimCode || o.qr) throw new UsageError('--manifest claims a whole manifest: give no --dev-eui, --claim-code or --qr with it');
      const manifest = await readFile(o.manifest, 'utf8').catch(() => {
        throw new UsageError(`--manifest ${o.manifest} cannot be read`);
      });
      const result = await api.request<BulkClaimResult>('POST', '/api/v1/claims/bulk', { manifest, ...options });
      print(o.json === true, result, () => [`Claimed ${result.claimed} device(s); ${result.failed} not claimed.`, ...result.items.filter((i) => i.outcome !== 'claimed' || i.claimCode).map((i) => `${i.devEui ?? '?'}\t${i.outcome}${i.claimCode ? `\tnew claim code ${i.claimCode}` : ''}`)].join('\n'));
      if (result.failed > 0) process.exitCode = 1;
      return;
    }
    if ((o.qr === undefined) === (o.devEui === undefined || o.claimCode === undefined)) throw new UsageError('give --qr, or --dev-eui with --claim-code, or --manifest');
    const body = o.qr !== undefined ? { qrCode: o.qr } : { devEui: o.devEui, claimCode: o.claimCode };
    const claimed = await api.request<ClaimOutcome>('POST', '/api/v1/claims', { ...body, ...options });
    print(o.json === true, claimed, () => `Claimed ${claimed.devEui} for ${claimed.owner}${claimed.locked ? ' (locked)' : ''}.${claimed.claimCode ? ` New claim code: ${claimed.claimCode}` : ''}`);
  });
}

export function registerBind(program: Command): void {
  addRemoteOptions(
    program
      .command('bind')
      .description('bind your devices to a home network and an application server (joins follow it at once)')
      .argument('<devEuis...>', 'DevEUIs (space- or comma-separated)')
      .requiredOption('--home-net-id <netId>', 'NetID of the home network')
      .option('--home-ns-id <nsId>', 'NSID of the home network server (LoRaWAN Backend Interfaces 1.1)')
      .option('--as-id <asId>', 'AS-ID of the application server that receives the AppSKey')
      .option('--ns-kek-label <label>', 'which of the network server\'s KEKs wraps its session keys')
      .option('--as-kek-label <label>', 'which of the application server\'s KEKs wraps the AppSKey')
      .option('--roaming <policy>', 'who may learn the home network via HomeNSReq: home-only, any-agreement, or NetIDs (comma-separated)', 'any-agreement')
      .option('--json', 'print JSON'),
  ).action(async (devEuis: string[], o: RemoteOptions & Json & { homeNetId: string; homeNsId?: string; asId?: string; nsKekLabel?: string; asKekLabel?: string; roaming: string }) => {
    const api = await remoteApi(o);
    const roaming = o.roaming === 'home-only' || o.roaming === 'any-agreement' ? o.roaming : splitList(o.roaming);
    const binding = { homeNetId: o.homeNetId, homeNsId: o.homeNsId ?? null, asId: o.asId ?? null, nsKekLabel: o.nsKekLabel ?? null, asKekLabel: o.asKekLabel ?? null, roaming };
    const result = await api.request<{ items: DeviceView[] }>('POST', '/api/v1/bindings', { devEuis: devEuis.flatMap(splitList), binding });
    print(o.json === true, result, () => `Bound ${result.items.length} device(s):\n${result.items.map(deviceLine).join('\n')}`);
  });
  addRemoteOptions(program.command('unbind').description('unbind your devices: no network can activate them until bound again').argument('<devEuis...>', 'DevEUIs')).action(
    async (devEuis: string[], o: RemoteOptions) => {
      const api = await remoteApi(o);
      await api.request('POST', '/api/v1/bindings/unbind', { devEuis: devEuis.flatMap(splitList) });
      process.stdout.write(`Unbound ${devEuis.flatMap(splitList).length} device(s).\n`);
    },
  );
  addRemoteOptions(program.command('unclaim').description('return your devices to their maker\'s stock (unbound, unowned)').argument('<devEuis...>', 'DevEUIs')).action(
    async (devEuis: string[], o: RemoteOptions) => {
      const api = await remoteApi(o);
      await api.request('POST', '/api/v1/claims/release', { devEuis: devEuis.flatMap(splitList) });
      process.stdout.write(`Returned ${devEuis.flatMap(splitList).length} device(s) to their maker.\n`);
    },
  );
}

export function registerDevices(program: Command): void {
  const devices = program.command('devices').description('your organisation\'s devices, through the REST API');
  addRemoteOptions(devices.command('list').description('list devices you can see').option('--bound', 'bound devices only').option('--unbound', 'unbound devices only').option('--json', 'print JSON')).action(
    async (o: RemoteOptions & Json & { bound?: boolean; unbound?: boolean }) => {
      const api = await remoteApi(o);
      const items: DeviceView[] = [];
      const filter = o.bound ? '&bound=true' : o.unbound ? '&bound=false' : '';
      for (let after: string | undefined; ; ) {
        const page = await api.request<{ items: DeviceView[]; next?: string }>('GET', `/api/v1/devices?limit=1000${filter}${after ? `&after=${enc(after)}` : ''}`);
        items.push(...page.items);
        if (page.next === undefined) break;
        after = page.next;
      }
      print(o.json === true, items, () => items.map(deviceLine).join('\n') || 'No devices.');
    },
  );
  addRemoteOptions(devices.command('show').argument('<devEui>').description('one device: ownership, claim state, binding').option('--json', 'print JSON')).action(async (devEui: string, o: RemoteOptions & Json) => {
    const d = await (await remoteApi(o)).request<DeviceView>('GET', `/api/v1/devices/${enc(devEui)}`);
    print(o.json === true, d, () => JSON.stringify(d, null, 2));
  });
  addRemoteOptions(devices.command('activations').argument('<devEui>').description('recent activations of a device').option('--json', 'print JSON')).action(async (devEui: string, o: RemoteOptions & Json) => {
    const page = await (await remoteApi(o)).request<{ items: ActivationView[] }>('GET', `/api/v1/devices/${enc(devEui)}/activations`);
    print(o.json === true, page, () => page.items.map((a) => `${a.at}\tJoinNonce ${a.joinNonce}\tDevNonce ${a.devNonce}\tNetID ${a.netId}\tDevAddr ${a.devAddr}`).join('\n') || 'No activations.');
  });
  addRemoteOptions(devices.command('reset-dev-nonces').argument('<devEui>').description('forget the DevNonces seen from a device that lost its counter (JoinNonce continues)')).action(async (devEui: string, o: RemoteOptions) => {
    await (await remoteApi(o)).request('POST', `/api/v1/devices/${enc(devEui)}/dev-nonce-reset`, {});
    process.stdout.write(`DevNonce history of ${devEui} cleared.\n`);
  });
}

/** Fleet transfer between organisations; added to the `transfer` group next to Join-Server-to-Join-Server export. */
export function registerFleetTransfer(transfer: Command): void {
  const show = (t: TransferView): string => `${t.id}\t${t.state}\t${t.from} → ${t.to ?? '(token)'}\t${t.devEuis.length} device(s)\texpires ${t.expiresAt ?? 'never'}`;
  addRemoteOptions(
    transfer
      .command('offer')
      .description('offer your devices to another organisation (direct), or to whoever presents a one-time token')
      .argument('<devEuis...>', 'DevEUIs')
      .option('--to <organisation>', 'the receiving organisation (omit for a token offer)')
      .option('--expires-in <seconds>', 'how long the offer stays open (default 7 days)')
      .option('--json', 'print JSON'),
  ).action(async (devEuis: string[], o: RemoteOptions & Json & { to?: string; expiresIn?: string }) => {
    const api = await remoteApi(o);
    const expiresInS = o.expiresIn === undefined ? undefined : Number(o.expiresIn);
    const r = await api.request<{ transfer: TransferView; token?: string }>('POST', '/api/v1/transfers', { devEuis: devEuis.flatMap(splitList), ...(o.to ? { to: o.to } : {}), ...(expiresInS === undefined ? {} : { expiresInS }) });
    print(o.json === true, r, () => `Offered: ${show(r.transfer)}${r.token ? `\nTransfer token (give it to the recipient; shown once): ${r.token}` : ''}`);
  });
  addRemoteOptions(
    transfer.command('accept').description('accept an offer: by its id (direct offers) or with its token').argument('[id]', 'transfer id').option('--token-file <file>', 'file holding the transfer token').option('--json', 'print JSON'),
  ).action(async (id: string | undefined, o: RemoteOptions & Json & { tokenFile?: string }) => {
    if ((id === undefined) === (o.tokenFile === undefined)) throw new UsageError('give the transfer id, or --token-file');
    const api = await remoteApi(o);
    const token = o.tokenFile === undefined ? undefined : (await readFile(o.tokenFile, 'utf8').catch(() => { throw new UsageError(`--token-file ${o.tokenFile} cannot be read`); })).trim();
    const t = token === undefined ? await api.request<TransferView>('POST', `/api/v1/transfers/${enc(id!)}/accept`, {}) : await api.request<TransferView>('POST', '/api/v1/transfers/accept', { token });
    print(o.json === true, t, () => `Accepted: ${show(t)}. The devices are yours and unbound: bind them with \`joinkeep bind\`.`);
  });
  addRemoteOptions(transfer.command('cancel').argument('<id>').description('withdraw an open offer')).action(async (id: string, o: RemoteOptions) => {
    await (await remoteApi(o)).request('DELETE', `/api/v1/transfers/${enc(id)}`);
    process.stdout.write(`Transfer ${id} cancelled.\n`);
  });
  addRemoteOptions(transfer.command('list').description('offers made by or to your organisation').option('--json', 'print JSON')).action(async (o: RemoteOptions & Json) => {
    const page = await (await remoteApi(o)).request<{ items: TransferView[] }>('GET', '/api/v1/transfers');
    print(o.json === true, page.items, () => page.items.map(show).join('\n') || 'No transfers.');
  });
}
