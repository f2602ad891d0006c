import { ProtocolError } from './errors.js';

export function assertUint16(value: number, field: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff) {
    throw new ProtocolError('OUT_OF_RANGE', `${field} must be an integer 0..65535`, field);
  }
}

export function assertUint24(value: number, field: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffff) {
    throw new ProtocolError('OUT_OF_RANGE', `${field} must be an integer 0..16777215`, field);
  }
}
