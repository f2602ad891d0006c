export * from './custody.js';
export * from './errors.js';
export { RECEIVING_KEY_BITS, receivingKeyJwk, rsaThumbprint } from './receiving-key.js';
export { SoftwareKeyCustody, type SealedKeyStore } from './software/keystore.js';
export { MASTER_KEY_ENV, createMasterKeyFile, loadMasterKey, type MasterKeySource } from './software/master-key.js';
