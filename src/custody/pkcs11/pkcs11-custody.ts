import {
  type ExportedKey,
  type KeyCustody,
  type KeyDestination,
  type KeyHandle,
  type KeyInfo,
  type KeyRef,
  type KeyUsage,
  kekHandle,
} from '../custody.js';
import { CustodyError } from '../errors.js';
import { micEquals } from '../primitives.js';
import { type LoadedModule, releaseModule } from './module.js';
import type { TokenSession } from './token-session.js';

export interface Pkcs11CustodyOptions {
  /** Creation time recorded on new token objects (CKA_ID, millisecond resolution; CKA_START_DATE, day). */
  readonly now?: () => Date;
}

/**
 * KeyCustody on a PKCS#11 token: root keys and KEKs are token objects (sensitive, non-extractable) and every
 * operation that uses them runs inside the token; derived keys are session objects destroyed after each call.
 * The semantics — error codes, order of refusals, usage checks, clear-export rule — are the software keystore's.
 *
 * Today one token is used (the first configured). The custody chooses a token per operation through #token(),
 * so a pool (every key imported into each token, failover on TOKEN_ERROR) plugs in there. pkcs11js calls are
 * synchronous and run on this thread for now; TokenSession is self-contained so a worker can host it.
 */
export class Pkcs11KeyCustody implements KeyCustody {
  readonly kind = 'pkcs11';
  readonly #module: LoadedModule;
  readonly #tokens: readonly TokenSession[];
  readonly #now: () => Date;
  #closed = false;

  /** Takes ownership of the module reference and the opened sessions; use openPkcs11Custody. */
  constructor(module: LoadedModule, tokens: readonly TokenSession[], options: Pkcs11CustodyOptions = {}) {
    if (tokens.length === 0) throw new CustodyError('TOKEN_UNAVAILABLE', 'no PKCS#11 token is configured');
    this.#module = module;
    this.#tokens = tokens;
    this.#now = options.now ?? (() => new Date());
  }

  async verifyMic(ref: KeyRef, message: Uint8Array, mic: Uint8Array): Promise<boolean> {
    // The token signs the full 16-byte CMAC; the 4-byte MIC is compared here in constant time.
    return micEquals(this.#token().cmac(ref.handle, ref.derive, message), mic);
  }

  async computeMic(ref: KeyRef, message: Uint8Array): Promise<Buffer> {
    return this.#token().cmac(ref.handle, ref.derive, message).subarray(0, 4);
  }

  async encryptJoinAccept(ref: KeyRef, plaintext: Uint8Array): Promise<Buffer> {
    if (plaintext.length !== 16 && plaintext.length !== 32) {
      throw new CustodyError('INVALID_KEY', 'a Join-accept to encrypt is 16 or 32 bytes');
    }
    // LoRaWAN 1.1 §6.2.3: the network "encrypts" with AES decrypt so the device only needs AES encrypt.
    return this.#token().ecbDecrypt(ref.handle, ref.derive, plaintext);
  }

  async deriveAndExport(root: KeyHandle, requests: readonly { block: Uint8Array; to: KeyDestination }[]): Promise<ExportedKey[]> {
    const token = this.#token();
    // Every refusal before any derivation, in the software keystore's order: root key, then each destination.
    token.check(root, 'root');
    const checked = new Set<string>();
    for (const r of requests) {
      if ('kekLabel' in r.to && !checked.has(r.to.kekLabel)) {
        token.check(kekHandle(r.to.kekLabel), 'kek', r.to.kekLabel);
        checked.add(r.to.kekLabel);
      }
      if ('clear' in r.to && r.to.clear.allowedBy !== 'operator-peer-setting') {
        throw new CustodyError('CLEAR_EXPORT_REFUSED', `clear export to ${r.to.clear.peer} is not authorised`);
      }
    }
    return requests.map((r) => {
      if ('clear' in r.to) return { kekLabel: null, key: token.deriveClear(root, r.block) };
      return { kekLabel: r.to.kekLabel, key: token.deriveWrapped(root, r.block, r.to.kekLabel, kekHandle(r.to.kekLabel)) };
    });
  }

  async importWrapped(handle: KeyHandle, usage: KeyUsage, wrapped: Uint8Array, unwrapWithKekLabel: string): Promise<void> {
    this.#token().unwrapInto(handle, usage, wrapped, unwrapWithKekLabel, kekHandle(unwrapWithKekLabel), this.#now());
  }

  async importKek(label: string, key: Uint8Array): Promise<void> {
    if (key.length !== 16 && key.length !== 24 && key.length !== 32) {
      throw new CustodyError('INVALID_KEY', `KEK "${label}" must be 16, 24 or 32 bytes`);
    }
    this.#token().createKek(kekHandle(label), key, this.#now());
  }

  async hasKey(handle: KeyHandle): Promise<boolean> {
    return this.#token().has(handle);
  }

  async hasKek(label: string): Promise<boolean> {
    return this.hasKey(kekHandle(label));
  }

  async listKeys(): Promise<KeyInfo[]> {
    return this.#token().list();
  }

  async deleteKey(handle: KeyHandle): Promise<void> {
    for (const token of this.#tokens) token.destroy(handle);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const token of this.#tokens) token.close();
    releaseModule(this.#module);
  }

  /** The token an operation runs on: the first for now; the place where a pool chooses and fails over. */
  #token(): TokenSession {
    if (this.#closed) throw new CustodyError('TOKEN_UNAVAILABLE', 'the PKCS#11 custody is closed');
    return this.#tokens[0]!;
  }
}
