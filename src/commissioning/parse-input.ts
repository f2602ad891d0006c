import { ProtocolError } from '../protocol/index.js';
import { CommissioningError } from './errors.js';

/** Runs a protocol parser on caller input; its ProtocolError becomes INVALID_INPUT with the same message. */
export function parseInput<T>(f: () => T): T {
  try {
    return f();
  } catch (error) {
    if (error instanceof ProtocolError) throw new CommissioningError('INVALID_INPUT', error.message);
    throw error;
  }
}
