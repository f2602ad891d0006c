/** Sealed, signed key batches (docs/specs/sealed-batch.md): the format, its verification, and the maker tool. */
export * from './format.js';
export * from './verify.js';
export * from './seal.js';
export * from './claim-codes.js';
export * from './factory-input.js';
export * from './outputs.js';
export * from './maker-tool.js';
