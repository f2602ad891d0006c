import type { Command } from 'commander';
import { print, withJoinkeep } from '../context.js';

export function registerAudit(program: Command): void {
  program
    .command('audit')
    .description('audit trail: activations and administrative changes')
    .command('list')
    .option('--data-dir <dir>', 'data directory (or JOINKEEP_DATA_DIR)')
    .option('--subject <subject>', 'e.g. device/0004A30B001C0530')
    .option('--action <action>', 'e.g. join.accept')
    .option('--limit <n>', 'page size', '100')
    .option('--after <cursor>', 'cursor from the previous page')
    .option('--json', 'print JSON')
    .action(async (o: { dataDir?: string; subject?: string; action?: string; limit: string; after?: string; json?: boolean }) => {
      const page = await withJoinkeep(o, (jk) => jk.storage.listAudit({ subject: o.subject, action: o.action, limit: Number(o.limit), after: o.after }));
      print(!!o.json, page, () =>
        page.items.map((e) => `${e.at.toISOString()}\t${e.actor}\t${e.action}\t${e.subject}\t${e.outcome}\t${JSON.stringify(e.details)}`).join('\n') || 'No audit events.',
      );
    });
}
