import type { Template } from 'pkcs11js';
import type { JsonWebKeyRsaPublic, KeyHandle, OaepHash } from '../custody.js';
import { CustodyError } from '../errors.js';
import { recipientPublicKey } from '../receiving-key.js';
import { oaepHashOf } from '../sealed-import.js';
import { DualLoginSession } from './dual-login-session.js';
import { type ObjectHandle, ckrName, pkcs11Lib } from './module.js';
import { settleDuplicates } from './transient-objects.js';
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
  readonly #s: DualLoginSession;

  private constructor(s: DualLoginSession) {
    this.#s = s;
  }

  static open(modulePath: string, token: TrustedKekToken): ExportAccess {
    return new ExportAccess(DualLoginSession.open(modulePath, token, { what: 'root keys are exported', command: 'joinkeep transfer export' }));
  }

  export(recipient: JsonWebKeyRsaPublic, oaep: OaepHash, handles: readonly KeyHandle[]): { encryptedBatchKey: Buffer; wrapped: Buffer[] } {
    const K = pkcs11Lib();
    const p = this.#s.module.pkcs11;
    // 1. Everything that can be refused about the keys, before the SO makes anything.
    this.#s.asUser(() => {
      for (const handle of handles) this.#rootKey(handle);
    });
    // 2. The batch key and its RSA-OAEP encryption, as the SO.
    let batch: ObjectHandle | undefined;
    let encryptedBatchKey: Buffer;
    try {
      encryptedBatchKey = this.#s.asSecurityOfficer(() => {
        batch = this.#s.step('generating the trusted batch key as the Security Officer', () => p.C_GenerateKey(this.#s.session, { mechanism: K.CKM_AES_KEY_GEN }, batchKeyTemplate()));
        const publicKey = this.#s.step('loading the recipient\'s public key', () =>
          p.C_CreateObject(this.#s.session, [
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
          this.#s.step('closing the batch key to further wrapping', () => p.C_SetAttributeValue(this.#s.session, batch!, [{ type: K.CKA_EXTRACTABLE, value: false }]));
          return encrypted;
        } finally {
          this.#s.destroyQuietly(publicKey);
        }
      });
    } catch (error) {
      if (batch !== undefined) this.#s.destroyQuietly(batch);
      throw error;
    }
    // 3. Each root key under the batch key, as the user; the batch key goes whatever happens.
    try {
      const wrapped = this.#s.asUser(() =>
        handles.map((handle) =>
          this.#s.step(`wrapping ${handle} under the batch key`, () => Buffer.from(p.C_WrapKey(this.#s.session, { mechanism: K.CKM_AES_KEY_WRAP }, batch!, this.#rootKey(handle), Buffer.alloc(48)))),
        ),
      );
      return { encryptedBatchKey, wrapped };
    } finally {
      this.#s.destroyQuietly(batch!);
    }
  }

  close(): void {
    this.#s.close();
  }

  #wrapBatchKey(publicKey: ObjectHandle, batch: ObjectHandle, oaep: OaepHash): Buffer {
    const K = pkcs11Lib();
    const sha256 = oaep === 'sha256';
    const mechanism = {
      mechanism: K.CKM_RSA_PKCS_OAEP,
      parameter: { type: K.CK_PARAMS_RSA_OAEP, hashAlg: sha256 ? K.CKM_SHA256 : K.CKM_SHA_1, mgf: sha256 ? K.CKG_MGF1_SHA256 : K.CKG_MGF1_SHA1, source: CKZ_DATA_SPECIFIED } as { type: number },
    };
    try {
      return Buffer.from(this.#s.module.pkcs11.C_WrapKey(this.#s.session, mechanism, publicKey, batch, Buffer.alloc(1024)));
    } catch (error) {
      const ckr = ckrName(error) ?? '';
      if (sha256 && OAEP_UNSUPPORTED.has(ckr)) {
        throw new CustodyError(
          'MECHANISM_UNSUPPORTED',
          `token "${this.#s.token.label}" cannot wrap with RSA-OAEP-256 (CKM_RSA_PKCS_OAEP with SHA-256 and MGF1-SHA-256: ${ckr}; SoftHSM2 2.6.1 wraps with SHA-1 only): export with --oaep sha1 (RSA-OAEP); nothing was exported`,
        );
      }
      throw new CustodyError('TOKEN_ERROR', `encrypting the batch key to the recipient on token "${this.#s.token.label}" failed: ${ckr || String(error)}`);
    }
  }

  /** The root key labelled `handle`, checked to be one the token will wrap under a trusted key. */
  #rootKey(handle: KeyHandle): ObjectHandle {
    const K = pkcs11Lib();
    const p = this.#s.module.pkcs11;
    const search = (): ObjectHandle[] => {
      p.C_FindObjectsInit(this.#s.session, [{ type: K.CKA_CLASS, value: K.CKO_SECRET_KEY }, { type: K.CKA_TOKEN, value: true }, { type: K.CKA_LABEL, value: handle }]);
      try {
        return p.C_FindObjects(this.#s.session, 2);
      } finally {
        p.C_FindObjectsFinal(this.#s.session);
      }
    };
    const found = settleDuplicates(search(), search);
    if (found.length === 0) throw new CustodyError('KEY_NOT_FOUND', `no key named ${handle} on token "${this.#s.token.label}"`);
    if (found.length > 1) throw new CustodyError('TOKEN_ERROR', `token "${this.#s.token.label}" holds several keys labelled ${handle}; remove the extra ones`);
    const object = found[0]!;
    for (const [name, expected] of EXPORTABLE) {
      const v = p.C_GetAttributeValue(this.#s.session, object, [{ type: K[name as 'CKA_SENSITIVE'] }])[0]?.value;
      const actual = Buffer.isBuffer(v) && v.length > 0 && v[0] !== 0;
      if (actual !== expected) {
        throw new CustodyError(
          'EXPORT_REFUSED',
          `${handle} on token "${this.#s.token.label}" was not created for trusted wrapping (${name}=${actual}): only root keys imported in trusted-KEK mode can be exported; nothing was exported`,
        );
      }
    }
    return object;
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
