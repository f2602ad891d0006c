import { Command } from 'commander';
import { eui64FromBeHex } from '../../src/protocol/index.js';
import { ApplicationServerClient } from '../application-server.js';
import { loadDeviceState } from '../device-state.js';
import { readKeyFile, readTokenFile } from '../key-material.js';
import { findingsLines } from '../report.js';
import type { WireStyle } from '../wire-style.js';
import { protocolVersionOption, styleOption } from './options.js';

interface Opts {
  url: string; tokenFile: string; asId: string; asKekFile: string; asKekLabel?: string;
  devEui: string; joinEui: string; sessionKeyId: string; state?: string; style: WireStyle; protocolVersion?: '1.0' | '1.1'; showKeys?: boolean;
}

/** AppSKeyReq as the AS; with --state, the AppSKey is compared with the device's current session. */
export function appSKeyCommand(): Command {
  return new Command('appskey')
    .description('AppSKeyReq as the application server; unwrap the AppSKey with the AS KEK')
    .requiredOption('--url <url>', 'Join Server Backend Interfaces URL')
    .requiredOption('--token-file <file>', 'bearer token of the AS')
    .requiredOption('--as-id <id>', 'AS-ID (SenderID)')
    .requiredOption('--as-kek-file <file>', 'KEK shared by the AS and the Join Server')
    .option('--as-kek-label <label>', 'expected KEKLabel (default: any)')
    .requiredOption('--dev-eui <hex>', 'DevEUI')
    .requiredOption('--join-eui <hex>', 'JoinEUI (ReceiverID)')
    .requiredOption('--session-key-id <hex>', 'SessionKeyID from the JoinAns')
    .option('--state <file>', 'device state file: compare with the device session AppSKey')
    .addOption(styleOption())
    .addOption(protocolVersionOption())
    .option('--show-keys', 'print key values (test keys only!)')
    .action(async (o: Opts) => {
      const devEui = eui64FromBeHex(o.devEui, '--dev-eui');
      const joinEui = eui64FromBeHex(o.joinEui, '--join-eui');
      const as = new ApplicationServerClient({
        url: o.url, token: readTokenFile(o.tokenFile), asId: o.asId, style: o.style, protocolVersion: o.protocolVersion,
        kek: { label: o.asKekLabel ?? '', key: readKeyFile(o.asKekFile, 'AS KEK file') },
      });
      const ans = await as.appSKeyReq(devEui, joinEui, o.sessionKeyId);
      const out: string[] = [];
      if (!ans.ok) out.push(ans.kind === 'result' ? `answer       Result ${ans.resultCode}${ans.description ? ` — ${ans.description}` : ''}` : `answer       ${ans.kind}: ${ans.detail}`);
      else {
        out.push(`answer       Result Success; SessionKeyID ${ans.sessionKeyId ?? '(none)'}${ans.inClear ? '; AppSKey in CLEAR' : ''}`);
        const hex = o.state ? loadDeviceState(o.state, devEui, joinEui).session?.keys['appSKey'] : undefined;
        if (hex === undefined) out.push('  AppSKey      unwrapped (no device session to compare)');
        else out.push(`  AppSKey      ${Buffer.from(hex, 'hex').equals(ans.appSKey) ? 'device = AS' : 'MISMATCH device ≠ AS (or the SessionKeyID is not the device\'s current session)'}`);
        if (o.showKeys) out.push(`    AS        ${ans.appSKey.toString('hex').toUpperCase()}`);
      }
      out.push(...findingsLines(ans.issues));
      process.stdout.write(`${out.join('\n')}\n`);
      process.exitCode = ans.ok ? 0 : 1;
    });
}
