import { readFile } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import type { Command } from 'commander';
import type { Joinkeep } from '../../app/joinkeep.js';
import { operatorCaller } from '../../commissioning/caller.js';
import { attachPeer, requireOrganisation } from '../../commissioning/makers.js';
import { RECOMMENDED_TOKEN_LENGTH, addApplicationServer, addClaimClient, addNetworkServer } from '../../commissioning/peers.js';
import type { PeerRecord } from '../../storage/storage.js';
import { UsageError, print, readSecretFile, withJoinkeep } from '../context.js';

interface PeerOptions {
  dataDir?: string;
  tokenFile?: string;
  clientCert?: string;
  kekLabel?: string;
  allowClearKeys?: boolean;
  org?: string;
}

/** Registers the peer and, with --org, attaches it to that organisation (checked to exist first). */
function register(o: PeerOptions, add: (jk: Joinkeep) => Promise<PeerRecord>): Promise<PeerRecord> {
  return withJoinkeep(o, async (jk) => {
    const attach = { store: jk.storage, audit: jk.audit };
    if (o.org !== undefined) await requireOrganisation(attach, o.org);
    const p = await add(jk);
    if (o.org !== undefined) await attachPeer(attach, operatorCaller(), p.id, o.org);
    return p;
  });
}

async function credentials(o: PeerOptions) {
  const token = o.tokenFile === undefined ? undefined : await readSecretFile(o.tokenFile, '--token-file');
  if (token !== undefined && token.length < RECOMMENDED_TOKEN_LENGTH) {
    process.stderr.write(`joinkeep: warning: the token in ${o.tokenFile} is shorter than ${RECOMMENDED_TOKEN_LENGTH} characters; prefer \`openssl rand -hex 32\`\n`);
  }
  let clientCertSha256: string | undefined;
  if (o.clientCert !== undefined) {
    try {
      clientCertSha256 = new X509Certificate(await readFile(o.clientCert)).fingerprint256.replaceAll(':', '').toLowerCase();
    } catch {
      throw new UsageError(`--client-cert ${o.clientCert} is not a readable PEM or DER certificate`);
    }
  }
  return { token, clientCertSha256, kekLabel: o.kekLabel, allowClearKeys: o.allowClearKeys };
}

function withCommon(c: Command): Command {
  return c
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--token-file <file>', 'file with the bearer token the peer sends (stored hashed)')
    .option('--client-cert <file>', 'pin the peer\'s TLS client certificate (PEM/DER) by fingerprint')
    .option('--kek-label <label>', 'KEK its session keys are wrapped under (add it first with `kek add`)')
    .option('--allow-clear-keys', 'explicitly allow clear session keys for this peer (only when it has no KEK)')
    .option('--org <id>', 'the organisation that runs this peer');
}

function describe(p: PeerRecord): string {
  const keys = p.kekLabel ? `KEK "${p.kekLabel}"` : p.allowClearKeys ? 'clear keys allowed' : 'no KEK (keys refused)';
  return `${p.id}\t${keys}\t${[p.tokenSha256 && 'token', p.clientCertSha256 && 'client-cert'].filter(Boolean).join('+')}`;
}

export function registerPeer(program: Command): void {
  const peer = program.command('peer').description('network servers and application servers allowed to call the Join Server');
  withCommon(peer.command('add-ns').description('register a network server (NetID, optional NSID)'))
    .requiredOption('--net-id <hex>', 'NetID of the network, 6 hex digits')
    .option('--ns-id <eui>', 'NSID (TS002-1.1) of this network server')
    .action(async (o: PeerOptions & { netId: string; nsId?: string }) => {
      const input = { netId: o.netId, nsId: o.nsId, ...(await credentials(o)) };
      const p = await register(o, (jk) => addNetworkServer({ storage: jk.storage, custody: jk.custody, audit: jk.audit, actor: 'cli' }, input));
      process.stdout.write(`Registered network server ${describe(p)}${o.org === undefined ? '' : ` for organisation ${o.org}`}.\n`);
    });
  withCommon(peer.command('add-as').description('register an application server (AS-ID)'))
    .requiredOption('--as-id <id>', 'AS-ID, as the application server sends it in SenderID')
    .action(async (o: PeerOptions & { asId: string }) => {
      const input = { asId: o.asId, ...(await credentials(o)) };
      const p = await register(o, (jk) => addApplicationServer({ storage: jk.storage, custody: jk.custody, audit: jk.audit, actor: 'cli' }, input));
      process.stdout.write(`Registered application server ${describe(p)}${o.org === undefined ? '' : ` for organisation ${o.org}`}.\n`);
    });
  peer
    .command('add-claim-client')
    .description('register a claim client (The Things Stack\'s Device Claiming Server) of an organisation: it calls the claim API v2 on the Backend Interfaces listener with this TLS client certificate')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .requiredOption('--name <name>', 'a name for it, e.g. tts-dcs')
    .requiredOption('--client-cert <file>', 'its TLS client certificate (PEM/DER), pinned by fingerprint')
    .requiredOption('--org <id>', 'the organisation (role device-owner) its claims are for')
    .action(async (o: PeerOptions & { name: string; org: string }) => {
      const { clientCertSha256 } = await credentials(o);
      const p = await register(o, (jk) => addClaimClient({ storage: jk.storage, custody: jk.custody, audit: jk.audit, actor: 'cli' }, { name: o.name, clientCertSha256: clientCertSha256! }));
      process.stdout.write(`Registered claim client ${p.id} for organisation ${o.org}; it needs the Backend Interfaces listener on TLS with a client CA (backend.tls.clientCaFile).\n`);
    });
  peer
    .command('list')
    .description('list registered peers (token hashes are never shown)')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--json', 'print JSON')
    .action(async (o: { dataDir?: string; json?: boolean }) => {
      const peers = await withJoinkeep(o, (jk) => jk.storage.listPeers());
      const rows = peers.map((p) => ({ id: p.id, kind: p.kind, netId: p.netId, nsId: p.nsId, asId: p.asId, kekLabel: p.kekLabel, allowClearKeys: p.allowClearKeys, token: p.tokenSha256 !== null, clientCert: p.clientCertSha256 !== null }));
      print(!!o.json, rows, () => peers.map(describe).join('\n') || 'No peers.');
    });
}
