import type { Template } from 'pkcs11js';
import type { JsonWebKeyRsaPublic, KeyHandle, OaepHash } from '../custody.js';
import { CustodyError } from '../errors.js';
import { recipientPublicKey } from '../receiving-key.js';
import { oaepHashOf } from '../sealed-import.js';
import { type LoadedModule, type ObjectHandle, acquireModule, ckrName, hasRegisteredLogin, pkcs11Lib, releaseModule } from './module.js';
import { securityOfficerRefusal, type TrustedKekToken } from './trusted-kek.js';

/*
 * Join-Server-to-Join-Server export from a token in trusted-KEK mode (`joinkeep transfer export`,
 * docs/specs/sealed-batch.md "Transfer between Join Servers"). Root keys in that mode are CKA_EXTRACTABLE=true with
 * CKA_WRAP_WITH_TRUSTED=true (token-session.ts): the token wraps them only under a key with CKA_TRUSTED=true, which
 * only the Security Officer can make. So, on one token (any member of a pool: the export only reads keys), in one
 * read-write session of this process, with no custody open here (an SO login logs the user out of every session):
 *   1. as the user: every root key to export is found (KEY_NOT_FOUND) and is exportable (EXPORT_REFUSED); logout;
 *   2. as the SO: C_GenerateKey (CKM_AES_KEY_GEN, 32 bytes) of the batch key as a *session* object — public (an SO
 *      session can create no private object), CKA_TRUSTED=true, sensitive, extractable, WRAP only — and a session
 *      public-key object of the recipient's RSA key; C_WrapKey (CKM_RSA_PKCS_OAEP) of the batch key under it gives
 *      the encrypted batch key; then CKA_EXTRACTABLE=false on the batch key (it cannot be wrapped again) and the
 *      public-key object is destroyed; SO logout;
 *   3. as the user: C_WrapKey (CKM_AES_KEY_WRAP, RFC 3394) of each root key under the batch key (object handles of
 *      private objects do not survive a logout on SoftHSM2, so the keys are found again); the batch key is destroyed
 *      in a `finally`, on every path, and the session is closed (which destroys any session object left).
 * Measured on SoftHSM2 2.6.1: all of the above works; C_WrapKey with OAEP SHA-256 fails (CKR_ARGUMENTS_BAD), as
 * C_UnwrapKey does, so only SHA-1 ("RSA-OAEP") is possible there; a root key cannot be wrapped under a key without
 * CKA_TRUSTED (CKR_KEY_NOT_WRAPPABLE), nor its CKA_WRAP_WITH_TRUSTED cleared (CKR_ATTRIBUTE_READ_ONLY).
 * The batch key never is a token object and never leaves the token in clear; it exists for the length of one call.
 */

/** Root-key attributes the export needs (what tokenKeyTemplate gives root keys in trusted-KEK mode). */
const EXPORTABLE: readonly (readonly [string, boolean])[] = [
  ['CKA_SENSITIVE', true],
  ['CKA_EXTRACTABLE', true],
  ['CKA_WRAP_WITH_TRUSTED', true],
];

/** pkcs11js has no constant for CKZ_DATA_SPECIFIED (spec-notes §9.1). */
const CKZ_DATA_SPECIFIED = 1;
const OAEP_UNSUPPORTED = new Set(['CKR_ARGUMENTS_BAD', 'CKR_MECHANISM_PARAM_INVALID', 'CKR_MECHANISM_INVALID']);

/**
 * Seals the root keys `handles` to `recipient` on the first of `tokens` that opens and accepts both PINs: a fresh
 * AES-256 batch key RSA-OAEP-encrypted to the recipient, and each key RFC 3394-wrapped under it. Refusals:
 * INVALID_KEY (the recipient), KEY_NOT_FOUND, EXPORT_REFUSED (a root key not made for trusted wrapping),
 * MECHANISM_UNSUPPORTED (the token cannot wrap with that OAEP hash), TOKEN_UNAVAILABLE (no token opens, a PIN is
 * refused, a custody is open in this process), TOKEN_ERROR.
 */
export function exportSealedTrusted(
  modulePath: string,
  tokens: readonly TrustedKekToken[],
  recipient: JsonWebKeyRsaPublic,
  oaep: OaepHash,
  handles: readonly KeyHandle[],
): { encryptedBatchKey: Buffer; wrapped: Buffer[] } {
  recipientPublicKey(recipient);
  oaepHashOf(oaep);
  const refused = securityOfficerRefusal();
  if (refused !== undefined) {
    throw new CustodyError('TOKEN_UNAVAILABLE', `root keys cannot be exported here (${refused}): the Security Officer logs in only in \`joinkeep transfer export\`, in its own process`);
  }
  if (tokens.length === 0) throw new CustodyError('TOKEN_UNAVAILABLE', 'no PKCS#11 token is configured');
  const unavailable: string[] = [];
  for (const token of tokens) {
    let access: ExportAccess;
    try {
      access = ExportAccess.open(token.modulePath ?? modulePath, token);
    } catch (error) {
      if (error instanceof CustodyError && error.code === 'TOKEN_UNAVAILABLE') {
        unavailable.push(error.message);
        continue;
      }
      throw error;
    }
    try {
      return access.export(recipient, oaep, handles);
    } catch (error) {
      // A token that is out of service: the next member of the pool holds the same keys.
      if (error instanceof CustodyError && error.code === 'TOKEN_UNAVAILABLE' && tokens.length > 1) {
        unavailable.push(error.message);
        continue;
      }
      throw error;
    } finally {
      access.close();
    }
  }
  throw new CustodyError('TOKEN_UNAVAILABLE', unavailable.join('; '));
}

class ExportAccess {
  readonly #module: LoadedModule;
  readonly #token: TrustedKekToken;
  readonly #session: ObjectHandle;

  private constructor(module: LoadedModule, token: TrustedKekToken, session: ObjectHandle) {
    this.#module = module;
    this.#token = token;
    this.#session = session;
  }

  static open(modulePath: string, token: TrustedKekToken): ExportAccess {
    const module = acquireModule(modulePath);
    try {
      const p = module.pkcs11;
      const K = pkcs11Lib();
      let slot: ObjectHandle | undefined;
      for (const s of p.C_GetSlotList(true)) {
        try {
          if (p.C_GetTokenInfo(s).label.trimEnd() === token.label) slot = s;
        } catch {
          // a token that does not answer is not the one asked for
        }
        if (slot !== undefined) break;
      }
      if (slot === undefined) throw new CustodyError('TOKEN_UNAVAILABLE', `no PKCS#11 token labelled "${token.label}" in ${modulePath}`);
      if (hasRegisteredLogin(module, slot.toString('hex'))) {
        throw new CustodyError('TOKEN_UNAVAILABLE', `the custody of token "${token.label}" is open in this process: root keys are exported only before it is opened (\`joinkeep transfer export\`)`);
      }
      return new ExportAccess(module, token, p.C_OpenSession(slot, K.CKF_SERIAL_SESSION | K.CKF_RW_SESSION));
    } catch (error) {
      releaseModule(module);
      if (error instanceof CustodyError) throw error;
      throw new CustodyError('TOKEN_UNAVAILABLE', `cannot open a session on token "${token.label}": ${ckrName(error) ?? String(error)}`);
    }
  }

  export(recipient: JsonWebKeyRsaPublic, oaep: OaepHash, handles: readonly KeyHandle[]): { encryptedBatchKey: Buffer; wrapped: Buffer[] } {
    const K = pkcs11Lib();
    const p = this.#module.pkcs11;
    // 1. Everything that can be refused about the keys, before the SO makes anything.
    this.#asUser(() => {
      for (const handle of handles) this.#rootKey(handle);
    });
    // 2. The batch key and its RSA-OAEP encryption, as the SO.
    let batch: ObjectHandle | undefined;
    let encryptedBatchKey: Buffer;
    try {
      encryptedBatchKey = this.#asSecurityOfficer(() => {
        batch = this.#step('generating the trusted batch key as the Security Officer', () => p.C_GenerateKey(this.#session, { mechanism: K.CKM_AES_KEY_GEN }, batchKeyTemplate()));
        const publicKey = this.#step('loading the recipient\'s public key', () =>
          p.C_CreateObject(this.#session, [
            { type: K.CKA_CLASS, value: K.CKO_PUBLIC_KEY },
            { type: K.CKA_KEY_TYPE, value: K.CKK_RSA },
            { type: K.CKA_TOKEN, value: false },
            { type: K.CKA_PRIVATE, value: false },
            { type: K.CKA_WRAP, value: true },
            { type: K.CKA_ENCRYPT, value: false },
            { type: K.CKA_VERIFY, value: false },
            { type: K.CKA_MODULUS, value: Buffer.from(recipient.n, 'base64url') },
            { type: K.CKA_PUBLIC_EXPONENT, value: Buffer.from(recipient.e, 'base64url') },
          ]),
        );
        try {
          const encrypted = this.#wrapBatchKey(publicKey, batch, oaep);
          // Sealed once: the token refuses to wrap it again (CKR_KEY_UNEXTRACTABLE, measured).
          this.#step('closing the batch key to further wrapping', () => p.C_SetAttributeValue(this.#session, batch!, [{ type: K.CKA_EXTRACTABLE, value: false }]));
          return encrypted;
        } finally {
          this.#destroyQuietly(publicKey);
        }
      });
    } catch (error) {
      if (batch !== undefined) this.#destroyQuietly(batch);
      throw error;
    }
    // 3. Each root key under the batch key, as the user; the batch key goes whatever happens.
    try {
      const wrapped = this.#asUser(() =>
        handles.map((handle) =>
          this.#step(`wrapping ${handle} under the batch key`, () => Buffer.from(p.C_WrapKey(this.#session, { mechanism: K.CKM_AES_KEY_WRAP }, batch!, this.#rootKey(handle), Buffer.alloc(48)))),
        ),
      );
      return { encryptedBatchKey, wrapped };
    } finally {
      this.#destroyQuietly(batch!);
    }
  }

  close(): void {
    try {
      // Also destroys any session object a failure left (the batch key at the latest here).
      this.#module.pkcs11.C_CloseSession(this.#session);
    } catch {
      // already closed
    }
    releaseModule(this.#module);
  }

  #wrapBatchKey(publicKey: ObjectHandle, batch: ObjectHandle, oaep: OaepHash): Buffer {
    const K = pkcs11Lib();
    const sha256 = oaep === 'sha256';
    const mechanism = {
      mechanism: K.CKM_RSA_PKCS_OAEP,
      parameter: { type: K.CK_PARAMS_RSA_OAEP, hashAlg: sha256 ? K.CKM_SHA256 : K.CKM_SHA_1, mgf: sha256 ? K.CKG_MGF1_SHA256 : K.CKG_MGF1_SHA1, source: CKZ_DATA_SPECIFIED } as { type: number },
    };
    try {
      return Buffer.from(this.#module.pkcs11.C_WrapKey(this.#session, mechanism, publicKey, batch, Buffer.alloc(1024)));
    } catch (error) {
      const ckr = ckrName(error) ?? '';
      if (sha256 && OAEP_UNSUPPORTED.has(ckr)) {
        throw new CustodyError(
          'MECHANISM_UNSUPPORTED',
          `token "${this.#token.label}" cannot wrap with RSA-OAEP-256 (CKM_RSA_PKCS_OAEP with SHA-256 and MGF1-SHA-256: ${ckr}; SoftHSM2 2.6.1 wraps with SHA-1 only): export with --oaep sha1 (RSA-OAEP); nothing was exported`,
        );
      }
      throw new CustodyError('TOKEN_ERROR', `encrypting the batch key to the recipient on token "${this.#token.label}" failed: ${ckr || String(error)}`);
    }
  }

  /** The root key labelled `handle`, checked to be one the token will wrap under a trusted key. */
  #rootKey(handle: KeyHandle): ObjectHandle {
    const K = pkcs11Lib();
    const p = this.#module.pkcs11;
    p.C_FindObjectsInit(this.#session, [{ type: K.CKA_CLASS, value: K.CKO_SECRET_KEY }, { type: K.CKA_TOKEN, value: true }, { type: K.CKA_LABEL, value: handle }]);
    let found: ObjectHandle[];
    try {
      found = p.C_FindObjects(this.#session, 2);
    } finally {
      p.C_FindObjectsFinal(this.#session);
    }
    if (found.length === 0) throw new CustodyError('KEY_NOT_FOUND', `no key named ${handle} on token "${this.#token.label}"`);
    if (found.length > 1) throw new CustodyError('TOKEN_ERROR', `token "${this.#token.label}" holds several keys labelled ${handle}; remove the extra ones`);
    const object = found[0]!;
    for (const [name, expected] of EXPORTABLE) {
      const v = p.C_GetAttributeValue(this.#session, object, [{ type: K[name as 'CKA_SENSITIVE'] }])[0]?.value;
      const actual = Buffer.isBuffer(v) && v.length > 0 && v[0] !== 0;
      if (actual !== expected) {
        throw new CustodyError(
          'EXPORT_REFUSED',
          `${handle} on token "${this.#token.label}" was not created for trusted wrapping (${name}=${actual}): only root keys imported in trusted-KEK mode can be exported; nothing was exported`,
        );
      }
    }
    return object;
  }

  #asUser<T>(body: () => T): T {
    return this.#loggedIn(pkcs11Lib().CKU_USER, 'user PIN', this.#token.pin, body);
  }

  #asSecurityOfficer<T>(body: () => T): T {
    return this.#loggedIn(pkcs11Lib().CKU_SO, 'Security Officer PIN', this.#token.soPin, body);
  }

  #loggedIn<T>(userType: number, what: string, pin: string, body: () => T): T {
    const p = this.#module.pkcs11;
    const label = this.#token.label;
    try {
      p.C_Login(this.#session, userType, pin);
    } catch (error) {
      const ckr = ckrName(error);
      if (ckr === 'CKR_PIN_INCORRECT' || ckr === 'CKR_PIN_INVALID' || ckr === 'CKR_PIN_LEN_RANGE') throw new CustodyError('TOKEN_UNAVAILABLE', `the ${what} for token "${label}" is refused (${ckr})`);
      if (ckr === 'CKR_PIN_LOCKED') throw new CustodyError('TOKEN_UNAVAILABLE', `the ${what} of token "${label}" is locked (CKR_PIN_LOCKED)`);
      if (ckr === 'CKR_USER_ALREADY_LOGGED_IN' || ckr === 'CKR_USER_ANOTHER_ALREADY_LOGGED_IN') {
        throw new CustodyError('TOKEN_UNAVAILABLE', `someone in this process is already logged in to token "${label}" (${ckr}): root keys are exported only where no custody is open (\`joinkeep transfer export\`)`);
      }
      throw new CustodyError('TOKEN_UNAVAILABLE', `login with the ${what} to token "${label}" failed: ${ckr ?? String(error)}`);
    }
    try {
      return body();
    } finally {
      try {
        p.C_Logout(this.#session);
      } catch {
        // CKR_USER_NOT_LOGGED_IN: nothing to undo
      }
    }
  }

  #step<T>(what: string, body: () => T): T {
    try {
      return body();
    } catch (error) {
      if (error instanceof CustodyError) throw error;
      throw new CustodyError('TOKEN_ERROR', `${what} on token "${this.#token.label}" failed: ${ckrName(error) ?? (error instanceof Error ? error.message : String(error))}`);
    }
  }

  #destroyQuietly(object: ObjectHandle): void {
    try {
      this.#module.pkcs11.C_DestroyObject(this.#session, object);
    } catch {
      // gone already; a session object dies with the session at the latest (close)
    }
  }
}

/** The batch key: an AES-256 session object, public (made by the SO), trusted, sensitive, extractable, WRAP only. */
function batchKeyTemplate(): Template {
  const K = pkcs11Lib();
  return [
    { type: K.CKA_CLASS, value: K.CKO_SECRET_KEY },
    { type: K.CKA_KEY_TYPE, value: K.CKK_AES },
    { type: K.CKA_VALUE_LEN, value: 32 },
    { type: K.CKA_TOKEN, value: false },
    { type: K.CKA_PRIVATE, value: false },
    { type: K.CKA_LABEL, value: 'transfer-batch-key' },
    { type: K.CKA_TRUSTED, value: true },
    { type: K.CKA_SENSITIVE, value: true },
    { type: K.CKA_EXTRACTABLE, value: true },
    { type: K.CKA_WRAP, value: true },
    { type: K.CKA_UNWRAP, value: false },
    { type: K.CKA_ENCRYPT, value: false },
    { type: K.CKA_DECRYPT, value: false },
    { type: K.CKA_SIGN, value: false },
    { type: K.CKA_VERIFY, value: false },
    { type: K.CKA_DERIVE, value: false },
  ];
}
