import { AppError } from '../app/errors.js';
import { CommissioningError } from '../commissioning/errors.js';
import { CustodyError } from '../custody/errors.js';
import { ProtocolError } from '../protocol/errors.js';
import { ProvisioningError } from '../provisioning/errors.js';
import { StorageError } from '../storage/errors.js';
import { NotFoundError, UsageError } from './context.js';
import { RemoteError } from './remote.js';

/** Exit codes: 2 usage, 1 refused or failed (the message says what to do), 70 unexpected (sysexits EX_SOFTWARE). */
export function exitCodeFor(error: unknown): number {
  if (error instanceof UsageError) return 2;
  return isKnown(error) ? 1 : 70;
}

export function messageFor(error: unknown): string {
  if (isKnown(error) || error instanceof UsageError) return (error as Error).message;
  const text = error instanceof Error ? error.message : String(error);
  return `${text} (unexpected; rerun with JOINKEEP_DEBUG=1 to see where)`;
}

function isKnown(error: unknown): boolean {
  return [AppError, CommissioningError, CustodyError, NotFoundError, ProtocolError, ProvisioningError, RemoteError, StorageError].some((c) => error instanceof c);
}
