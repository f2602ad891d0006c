import { Command } from 'commander';
import { eui64FromBeHex } from '../../src/protocol/index.js';
import { findingsLines } from '../report.js';
import { type NsOpts, makeNs, protocolVersionOption, styleOption } from './options.js';

type Opts = Omit<NsOpts, 'nsKekFile' | 'nsKekLabel'> & { devEui: string; joinEui: string };

export function homeNsCommand(): Command {
  return new Command('homens')
    .description('HomeNSReq as a (visited) network server: which NetID is the device\'s home?')
    .requiredOption('--url <url>', 'Join Server Backend Interfaces URL')
    .requiredOption('--token-file <file>', 'bearer token of the NS')
    .requiredOption('--net-id <hex>', 'NetID of the asking NS (SenderID)')
    .option('--ns-id <eui>', 'NSID (SenderNSID on TS002-1.1)')
    .requiredOption('--dev-eui <hex>', 'DevEUI')
    .requiredOption('--join-eui <hex>', 'JoinEUI (ReceiverID)')
    .addOption(styleOption())
    .addOption(protocolVersionOption())
    .action(async (o: Opts) => {
      // HomeNSReq carries no keys; the KEK is never used.
      const ns = makeNs({ ...o, nsKekFile: '', nsKekLabel: '' }, false);
      const ans = await ns.homeNsReq(eui64FromBeHex(o.devEui, '--dev-eui'), eui64FromBeHex(o.joinEui, '--join-eui'));
      const out: string[] = [];
      if (ans.ok) out.push(`answer       Result Success; HNetID ${ans.hNetId}${ans.hNsId ? `; HNSID ${ans.hNsId}` : ''}`);
      else out.push(ans.kind === 'result' ? `answer       Result ${ans.resultCode}${ans.description ? ` — ${ans.description}` : ''}` : `answer       ${ans.kind}: ${ans.detail}`);
      out.push(...findingsLines(ans.issues));
      process.stdout.write(`${out.join('\n')}\n`);
      process.exitCode = ans.ok ? 0 : 1;
    });
}
