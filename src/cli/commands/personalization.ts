import { readFile, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { importSealedBatch } from '../../provisioning/batch-import.js';
import { addMaker } from '../../provisioning/makers.js';
import { operatorCaller } from '../../commissioning/caller.js';
import { attachMaker, requireOrganisation } from '../../commissioning/makers.js';
import { currentReceivingKey, publishedReceivingKeys } from '../../provisioning/receiving-keys.js';
import { confirmTransfer, signTransferReceipt } from '../../provisioning/transfer.js';
import type { JWK } from 'jose';
import { eui64FromBeHex } from '../../protocol/index.js';
import type { MakerRecord } from '../../storage/storage.js';
import { NotFoundError, UsageError, dataDirOf, print, withJoinkeep } from '../context.js';
import { collect } from '../pkcs11-options.js';

/*
 * Joinkeep's side of personalization (docs/specs/sealed-batch.md): its receiving key, the makers it trusts, sealed
 * batch import and the inventory of unclaimed devices. The maker's side is `joinkeep batch keygen` / `batch seal`.
 */

export function registerReceivingKey(program: Command): void {
  const rk = program.command('receiving-key').description('the key pair makers seal batches to (private half never leaves custody)');
  rk.command('create')
    .description('create a new receiving key in custody (RSA-3072); it becomes the one `show` publishes')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--json', 'print the public JWK as JSON')
    .action(async (o: { dataDir?: string; json?: boolean }) => {
      const key = await withJoinkeep(o, async (jk) => {
        const created = await jk.custody.createReceivingKey();
        await jk.audit.appendAudit({ at: created.createdAt, actor: 'cli', action: 'receiving-key.create', subject: `receiving-key/${created.kid}`, outcome: 'success', details: { custody: jk.custody.kind } });
        return (await publishedReceivingKeys(jk.custody)).find((k) => k.kid === created.kid) ?? created;
      });
      print(o.json === true, key.jwk, () => `Created receiving key ${key.kid} in custody. Publish it with \`joinkeep receiving-key show --out FILE\`.`);
    });
  rk.command('show')
    .description('print (or write) the current receiving key as a public JWK, for makers to seal batches to')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--kid <kid>', 'a receiving key other than the newest')
    .option('--out <file>', 'write the JWK to FILE instead of printing it')
    .action(async (o: { dataDir?: string; kid?: string; out?: string }) => {
      const key = await withJoinkeep(o, async (jk) => (o.kid === undefined ? currentReceivingKey(jk.custody) : (await publishedReceivingKeys(jk.custody)).find((k) => k.kid === o.kid)));
      if (key === undefined) throw new NotFoundError(o.kid === undefined ? 'no receiving key yet: create one with `joinkeep receiving-key create`' : `no receiving key ${o.kid}`);
      const text = `${JSON.stringify(key.jwk, null, 2)}\n`;
      if (o.out === undefined) process.stdout.write(text);
      else {
        await writeFile(o.out, text, { flag: 'wx' }).catch((e: NodeJS.ErrnoException) => {
          throw new UsageError(e.code === 'EEXIST' ? `--out ${o.out} exists; not overwriting it` : `--out ${o.out}: ${e.message}`);
        });
        process.stdout.write(`Wrote receiving key ${key.kid} to ${o.out}.\n`);
      }
    });
  rk.command('list')
    .description('list receiving keys (newest first)')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--json', 'print JSON')
    .action(async (o: { dataDir?: string; json?: boolean }) => {
      const keys = (await withJoinkeep(o, (jk) => publishedReceivingKeys(jk.custody))).sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime());
      print(o.json === true, keys.map((k) => ({ kid: k.kid, createdAt: k.createdAt.toISOString(), jwk: k.jwk })), () => keys.map((k) => `${k.kid}\t${k.createdAt.toISOString()}`).join('\n') || 'No receiving keys.');
    });
}


export function registerMaker(program: Command): void {
  const maker = program.command('maker').description('makers, secure-element vendors and Join Servers whose signed batches are accepted');
  maker
    .command('add')
    .description('register a maker by name and public signing key (JWK, EC P-256 or Ed25519)')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .requiredOption('--name <name>', 'the name its batches carry in "maker"')
    .option('--kind <kind>', 'device-maker, se-vendor or join-server', 'device-maker')
    .requiredOption('--public-key <file>', 'its public signing key as a JWK file (from `joinkeep batch keygen`)')
    .option('--org <id>', 'the organisation it belongs to (it may then import this maker\'s batches over the API)')
    .action(async (o: { dataDir?: string; name: string; kind: string; publicKey: string; org?: string }) => {
      const jwk = await readFile(o.publicKey, 'utf8').catch(() => {
        throw new UsageError(`--public-key ${o.publicKey} cannot be read`);
      });
      const m = await withJoinkeep(o, async (jk) => {
        const attach = { store: jk.storage, audit: jk.audit };
        if (o.org !== undefined) await requireOrganisation(attach, o.org);
        const added = await addMaker({ storage: jk.storage, audit: jk.audit, actor: 'cli' }, { name: o.name, kind: o.kind as MakerRecord['kind'], publicJwk: jwk });
        if (o.org !== undefined) await attachMaker(attach, operatorCaller(), added.name, o.org);
        return added;
      });
      process.stdout.write(`Registered ${m.kind} ${m.name} (signing key ${m.keyId})${o.org === undefined ? '' : ` for organisation ${o.org}`}.\n`);
    });
  maker
    .command('list')
    .description('list registered makers')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--json', 'print JSON')
    .action(async (o: { dataDir?: string; json?: boolean }) => {
      const makers = await withJoinkeep(o, (jk) => jk.storage.listMakers());
      print(o.json === true, makers.map((m) => ({ ...m, createdAt: m.createdAt.toISOString() })), () => makers.map((m) => `${m.name}\t${m.kind}\t${m.keyId}`).join('\n') || 'No makers.');
    });
}

/** `joinkeep batch import`, added to the `batch` command group. */
export function registerBatchImport(batch: Command): void {
  batch
    .command('import')
    .description('import a sealed batch: verify its signature, unwrap its keys into custody, add its devices to the maker\'s inventory (all or nothing)')
    .argument('<file>', 'the sealed batch (JSON)')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--receipt <file>', 'for a transfer from another Join Server: write the signed receipt it needs to retire the devices')
    .option('--signing-key <file>', 'with --receipt: our signing key (private JWK) that the sender registered')
    .option('--as <name>', 'with --receipt: our name as the sender registered us')
    .option('--json', 'print JSON')
    .action(async (file: string, o: { dataDir?: string; receipt?: string; signingKey?: string; as?: string; json?: boolean }) => {
      if (o.receipt !== undefined && (o.signingKey === undefined || o.as === undefined)) throw new UsageError('--receipt needs --signing-key and --as');
      const bytes = await readFile(file).catch(() => {
        throw new UsageError(`${file} cannot be read`);
      });
      const signingKey = o.signingKey === undefined ? undefined : await readJwk(o.signingKey, '--signing-key');
      const r = await withJoinkeep(o, (jk) => importSealedBatch({ storage: jk.storage, custody: jk.custody, actor: 'cli' }, bytes));
      if (o.receipt !== undefined) {
        if (r.kind !== 'transfer') throw new UsageError(`--receipt is for transfer batches; ${r.batchId} is of kind ${r.kind} (it was imported)`);
        await writePrivate(o.receipt, await signTransferReceipt({ file: bytes, receiver: o.as!, signingKey: signingKey!, at: new Date() }), '--receipt');
      }
      print(o.json === true, r, () => `Imported batch ${r.batchId} of ${r.maker} (${r.kind}): ${r.devices} device(s) now in ${r.maker}'s inventory.${o.receipt ? ` Receipt for the sender: ${o.receipt}.` : ''}`);
    });
}

export function registerTransfer(program: Command): Command {
  const transfer = program.command('transfer').description('hand devices over to another Join Server: keys sealed to its receiving key, retired here on its receipt');
  transfer
    .command('export')
    .description('seal devices\' root keys and join state to another Join Server (a signed batch of kind "transfer")')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .requiredOption('--to <name>', 'the receiving Join Server, registered here with `maker add --kind join-server`')
    .requiredOption('--recipient-key <file>', 'its receiving key (public JWK from its `receiving-key show`)')
    .requiredOption('--dev-eui <list>', 'comma-separated DevEUIs')
    .requiredOption('--as <name>', 'our name as the receiver registered us')
    .requiredOption('--signing-key <file>', 'our signing key (private JWK, from `batch keygen`) whose public half the receiver registered')
    .option('--oaep <hash>', 'RSA-OAEP hash for the batch key: sha256 or sha1 (an HSM receiver may need sha1; so does a SoftHSM2 sender)', 'sha256')
    .option('--so-pin-file <file>', 'PKCS#11 trusted-KEK mode: file holding the Security Officer PIN of a token (repeat per token, in the order of `init`); default: the source `init` recorded', collect, [])
    .option('--so-pin-env <var>', 'PKCS#11 trusted-KEK mode: environment variable holding the Security Officer PIN of a token (repeat per token)', collect, [])
    .requiredOption('--out <file>', 'the sealed transfer batch to write')
    .option('--json', 'print JSON')
    .action(async (o: { dataDir?: string; to: string; recipientKey: string; devEui: string; as: string; signingKey: string; oaep: string; soPinFile: string[]; soPinEnv: string[]; out: string; json?: boolean }) => {
      if (o.oaep !== 'sha256' && o.oaep !== 'sha1') throw new UsageError('--oaep must be sha256 or sha1');
      if (o.soPinFile.length > 0 && o.soPinEnv.length > 0) throw new UsageError('give the Security Officer PINs either all with --so-pin-file or all with --so-pin-env');
      const soPins = [...o.soPinFile.map((f) => ({ soPinFile: resolve(f) })), ...o.soPinEnv.map((v) => ({ soPinEnv: v }))];
      const dataDir = dataDirOf(o);
      const { loadConfig } = await import('../../app/config.js');
      const custody = (await loadConfig(dataDir)).custody;
      const trusted = custody.kind === 'pkcs11' && custody.trustedKeks === true;
      if (soPins.length > 0 && !trusted) {
        throw new UsageError('--so-pin-file and --so-pin-env go with a PKCS#11 data directory in trusted-KEK mode (`init --trusted-keks`); this one needs no Security Officer');
      }
      if (soPins.length > 0 && custody.kind === 'pkcs11' && soPins.length !== custody.tokens.length) {
        throw new UsageError(`give one --so-pin-file (or one --so-pin-env) per token, in the order of \`init\`: ${custody.tokens.map((t) => `"${t.label}"`).join(', ')}`);
      }
      const [recipientKey, signingKey] = [await readJwk(o.recipientKey, '--recipient-key'), await readJwk(o.signingKey, '--signing-key')];
      const [{ exportTransferFromDataDir }, { createLogger }, { default: pino }] = await Promise.all([import('../../app/transfer.js'), import('../../observability/logger.js'), import('pino')]);
      const r = await exportTransferFromDataDir(
        dataDir,
        { recipient: o.to, recipientKey: recipientKey as never, devEuis: o.devEui.split(',').map((d) => d.trim()).filter(Boolean), sender: o.as, signingKey, oaep: o.oaep as 'sha256' | 'sha1' },
        { soPins, logger: createLogger({ level: 'warn', destination: pino.destination(2) }) },
      );
      await writePrivate(o.out, r.file, '--out');
      print(o.json === true, { batchId: r.batchId, devices: r.devices }, () => `Sealed ${r.devices} device(s) to ${o.to} as transfer ${r.batchId} in ${o.out}. They stay here until \`joinkeep transfer confirm RECEIPT\`.`);
    });
  transfer
    .command('confirm')
    .description('retire the devices of a transfer, and their keys, on the receiver\'s signed receipt')
    .argument('<receipt>', 'the receipt the receiver wrote with `batch import --receipt`')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--json', 'print JSON')
    .action(async (receiptFile: string, o: { dataDir?: string; json?: boolean }) => {
      const receipt = await readFile(receiptFile).catch(() => {
        throw new UsageError(`${receiptFile} cannot be read`);
      });
      const r = await withJoinkeep(o, (jk) => confirmTransfer({ storage: jk.storage, custody: jk.custody, actor: 'cli' }, receipt));
      print(o.json === true, r, () => `Transfer ${r.batchId} confirmed: ${r.devices} device(s) and their keys retired here.`);
    });
  return transfer;
}

async function readJwk(path: string, option: string): Promise<JWK> {
  const text = await readFile(path, 'utf8').catch(() => {
    throw new UsageError(`${option} ${path} cannot be read`);
  });
  try {
    return JSON.parse(text) as JWK;
  } catch {
    throw new UsageError(`${option} ${path} is not a JWK (JSON)`);
  }
}

async function writePrivate(path: string, data: Uint8Array, option: string): Promise<void> {
  await writeFile(path, data, { flag: 'wx', mode: 0o600 }).catch((e: NodeJS.ErrnoException) => {
    throw new UsageError(e.code === 'EEXIST' ? `${option} ${path} exists; not overwriting it` : `${option} ${path}: ${e.message}`);
  });
}

export function registerInventory(program: Command): void {
  const inventory = program.command('inventory').description('devices imported from batches and not claimed yet (keys are never shown)');
  inventory
    .command('list')
    .description('list unclaimed devices')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--maker <name>', 'only this maker\'s')
    .option('--batch <id>', 'only this batch\'s')
    .option('--limit <n>', 'page size (1…1000)', '100')
    .option('--after <cursor>', 'the cursor printed after the previous page')
    .option('--json', 'print JSON')
    .action(async (o: { dataDir?: string; maker?: string; batch?: string; limit: string; after?: string; json?: boolean }) => {
      const page = await withJoinkeep(o, (jk) =>
        jk.storage.listInventory({ limit: Number(o.limit), ...(o.after ? { after: o.after } : {}), ...(o.maker ? { maker: o.maker } : {}), ...(o.batch ? { batchId: o.batch } : {}) }),
      );
      print(o.json === true, { items: page.items.map((d) => ({ ...d, createdAt: d.createdAt.toISOString() })), next: page.next }, () =>
        [...page.items.map((d) => `${d.devEui}\t${d.joinEui}\t${d.macVersion}\t${d.maker}\t${d.batchId}\t${d.serialNumber ?? '-'}`), ...(page.next ? [`(more: --after ${page.next})`] : [])].join('\n') || 'No devices.',
      );
    });
  inventory
    .command('show')
    .description('show one unclaimed device')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .requiredOption('--dev-eui <hex>', 'DevEUI')
    .option('--json', 'print JSON')
    .action(async (o: { dataDir?: string; devEui: string; json?: boolean }) => {
      let devEui;
      try {
        devEui = eui64FromBeHex(o.devEui, '--dev-eui');
      } catch (error) {
        throw new UsageError((error as Error).message);
      }
      const d = await withJoinkeep(o, (jk) => jk.storage.getInventoryDevice(devEui));
      if (d === undefined) throw new NotFoundError(`no unclaimed device ${devEui}`);
      print(o.json === true, { ...d, createdAt: d.createdAt.toISOString() }, () =>
        [`DevEUI      ${d.devEui}`, `JoinEUI     ${d.joinEui}`, `LoRaWAN     ${d.macVersion}`, `Maker       ${d.maker}`, `Batch       ${d.batchId}`, `Serial      ${d.serialNumber ?? '-'}`, `Profile     ${d.profile ?? '-'}`, `Claim code  ${d.claimCodeHash === null ? 'none' : 'set (stored hashed)'}`].join('\n'),
      );
    });
}
