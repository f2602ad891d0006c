#!/usr/bin/env node
import { Command } from 'commander';
import { activationCommand } from './commands/activate.js';
import { appSKeyCommand } from './commands/appskey.js';
import { homeNsCommand } from './commands/homens.js';
import { keygenCommand } from './commands/keygen.js';
import { wrapCommand } from './commands/wrap.js';

/*
 * joinkeep-sim: plays the device, the network server and the application server against a Joinkeep
 * Join Server, for the README's worked example and for interop checks. Test keys only.
 */

const program = new Command('joinkeep-sim')
  .description('LoRaWAN device / network server / application server simulator for a TS002 Join Server')
  .addCommand(keygenCommand())
  .addCommand(wrapCommand())
  .addCommand(activationCommand('join'))
  .addCommand(activationCommand('rejoin'))
  .addCommand(appSKeyCommand())
  .addCommand(homeNsCommand());

program.parseAsync(process.argv).catch((e: unknown) => {
  const err = e as Error & { code?: string };
  process.stderr.write(`joinkeep-sim: ${err.code ? `${err.code}: ` : ''}${err.message}\n`);
  process.exitCode = 2;
});
