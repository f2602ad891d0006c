#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { registerApiKey } from './commands/api-key.js';
import { registerAudit } from './commands/audit.js';
import { registerBatchSealCommands } from './commands/batch-seal.js';
import { registerBind, registerClaim, registerDevices, registerFleetTransfer } from './commands/commissioning.js';
import { registerCustody } from './commands/custody.js';
import { registerDevice } from './commands/device.js';
import { registerInit } from './commands/init.js';
import { registerKek } from './commands/kek.js';
import { registerOrg } from './commands/org.js';
import { registerLabels } from './commands/labels.js';
import { registerPeer } from './commands/peer.js';
import { registerBatchImport, registerInventory, registerMaker, registerReceivingKey, registerTransfer } from './commands/personalization.js';
import { registerServe } from './commands/serve.js';
import { exitCodeFor, messageFor } from './errors.js';

const program = new Command('joinkeep')
  .description('Joinkeep: LoRaWAN Join & Activation Server')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();

registerInit(program);
registerKek(program);
registerPeer(program);
registerDevice(program);
// One `batch` group; each file registers its subcommands into it.
const batch = program.command('batch').description('sealed key batches: maker tools (keygen, seal) and import into Joinkeep');
registerBatchSealCommands(batch);
registerBatchImport(batch);
registerReceivingKey(program);
registerMaker(program);
registerInventory(program);
registerFleetTransfer(registerTransfer(program));
registerClaim(program);
registerBind(program);
registerDevices(program);
registerOrg(program);
registerApiKey(program);
registerLabels(program);
registerAudit(program);
registerCustody(program);
registerServe(program);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    process.exitCode = error.exitCode;
  } else {
    process.stderr.write(`joinkeep: error: ${messageFor(error)}\n`);
    if (process.env['JOINKEEP_DEBUG'] && error instanceof Error) process.stderr.write(`${error.stack}\n`);
    process.exitCode = exitCodeFor(error);
  }
}
