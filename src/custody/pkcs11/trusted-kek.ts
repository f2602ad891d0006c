import type { Template } from 'pkcs11js';
import { kekHandle } from '../custody.js';
import { CustodyError } from '../errors.js';
import { DualLoginSession } from './dual-login-session.js';
import { type ObjectHandle, ckrName, pkcs11Lib } from './module.js';
import { type TokenIdentity, tokenKeyTemplate } from './token-session.js';

/*
 * Trusted KEKs (PKCS#11 CKA_TRUSTED), for tokens in trusted-KEK mode, where every session key that leaves wrapped is
 * derived with CKA_WRAP_WITH_TRUSTED=true (token-session.ts) and so can be wrapped only under such a KEK.
 *
 * On SoftHSM2 2.6.1 (docs/security.md, measured) only the Security Officer can make a trusted key, and only as a
 * *public* object: an SO session cannot create private objects (CKR_USER_NOT_LOGGED_IN) nor set CKA_TRUSTED on an
 * existing one (CKR_ATTRIBUTE_READ_ONLY). So, per token:
 *   1. as the user: check the PIN, that the label is free, and remove public KEKs a crashed run left behind;
 *   2. as the SO (the user logged out first: both cannot be logged in at once in one application,
 *      CKR_USER_ANOTHER_ALREADY_LOGGED_IN): C_CreateObject of the KEK from its clear value, public, CKA_TRUSTED=true,
 *      sensitive, non-extractable, WRAP/UNWRAP only, under a temporary label; SO logout;
 *   3. as the user: C_CopyObject into a private token object labelled as a normal KEK (CKA_TRUSTED is kept), then
 *      C_DestroyObject of the public one — in a `finally`, so also when the copy fails. A public object can be
 *      destroyed in a read-write session with or without a login, so the clean-up never depends on a PIN.
 * A public KEK can wrap and unwrap without any login, so steps 2–3 run back to back with nothing in between.
 *
 * Every token of a pool is first checked (user PIN, SO PIN, label free) before any KEK is created, and a failure on
 * one token removes the KEK from the tokens that already have it: all or nothing, as the pool does for writes.
 *
 * This runs synchronously on the calling thread and needs a process in which no Joinkeep custody is open on the token
 * (its login would keep the SO out, and its workers could be creating token objects, which SoftHSM2 2.6.1 does not
 * always survive concurrently): `joinkeep kek add` does it before opening the data directory. `joinkeep serve`
 * forbids it for the whole process (refuseSecurityOfficerLogin).
 */

/** Label of the public KEK between its creation by the SO and its copy by the user. */
export const PENDING_PREFIX = 'kek-pending/';

export interface TrustedKekToken extends TokenIdentity {
  /** The Security Officer's PIN of this token. */
  readonly soPin: string;
  /** The token's own PKCS#11 library, when it differs from the pool's. */
  readonly modulePath?: string | undefined;
}

let securityOfficerRefused: string | undefined;

/** Forbids Security Officer logins for the rest of this process (called by `joinkeep serve`). */
export function refuseSecurityOfficerLogin(why: string): void {
  securityOfficerRefused = why;
}

/** Why Security Officer logins are forbidden in this process (refuseSecurityOfficerLogin), if they are. */
export function securityOfficerRefusal(): string | undefined {
  return securityOfficerRefused;
}

/**
 * Creates the KEK `label` from its clear value as a private, trusted token object on every token, all or nothing.
 * Refusals: KEY_EXISTS (the label is taken on some token), TOKEN_UNAVAILABLE (token missing, a PIN refused, a
 * custody open in this process), TOKEN_ERROR (the token refused a step; nothing is left behind).
 */
export function createTrustedKeks(modulePath: string, tokens: readonly TrustedKekToken[], label: string, key: Uint8Array, createdAt: Date): void {
  if (securityOfficerRefused !== undefined) {
    throw new CustodyError('TOKEN_UNAVAILABLE', `a trusted KEK cannot be created here (${securityOfficerRefused}): the Security Officer logs in only in \`joinkeep kek add\`, in its own process`);
  }
  if (key.length !== 16 && key.length !== 24 && key.length !== 32) throw new CustodyError('INVALID_KEY', `KEK "${label}" must be 16, 24 or 32 bytes`);
  if (tokens.length === 0) throw new CustodyError('TOKEN_UNAVAILABLE', 'no PKCS#11 token is configured');
  const opened: TokenAccess[] = [];
  try {
    for (const t of tokens) opened.push(TokenAccess.open(t.modulePath ?? modulePath, t));
    // Everything that can be refused is checked on every token before anything is created.
    for (const t of opened) t.check(label);
    const done: TokenAccess[] = [];
    try {
      for (const t of opened) {
        t.create(label, key, createdAt);
        done.push(t);
      }
    } catch (error) {
      const undone = done.map((t) => t.undo(label)).filter((e): e is string => e !== undefined);
      if (undone.length > 0) {
        const reason = error instanceof Error ? error.message : String(error);
        throw new CustodyError('TOKEN_ERROR', `${reason}; and the KEK could not be removed again from ${undone.join('; ')}: remove ${kekHandle(label)} there by hand`);
      }
      throw error;
    }
  } finally {
    for (const t of opened) t.close();
  }
}

/** One token: its own read-write session, no login held between steps. */
class TokenAccess {
  readonly #s: DualLoginSession;

  private constructor(s: DualLoginSession) {
    this.#s = s;
  }

  static open(modulePath: string, token: TrustedKekToken): TokenAccess {
    return new TokenAccess(DualLoginSession.open(modulePath, token, { what: 'a trusted KEK is created', command: 'joinkeep kek add' }));
  }

  /** User PIN, SO PIN, label free; removes public KEKs a crashed run left behind. */
  check(label: string): void {
    this.#s.asUser(() => {
      if (this.#find([{ type: pkcs11Lib().CKA_LABEL, value: kekHandle(label) }]).length > 0) {
        throw new CustodyError('KEY_EXISTS', `a key named ${kekHandle(label)} already exists on token "${this.#s.token.label}"`);
      }
      this.#removePending();
    });
    this.#s.asSecurityOfficer(() => undefined);
  }

  create(label: string, key: Uint8Array, createdAt: Date): void {
    const K = pkcs11Lib();
    const p = this.#s.module.pkcs11;
    const handle = kekHandle(label);
    const pendingLabel = `${PENDING_PREFIX}${label}`;
    const template: Template = [
      ...tokenKeyTemplate(handle, 'kek', createdAt).map((a) =>
        a.type === K.CKA_PRIVATE ? { type: K.CKA_PRIVATE, value: false } : a.type === K.CKA_LABEL ? { type: K.CKA_LABEL, value: pendingLabel } : a,
      ),
      { type: K.CKA_TRUSTED, value: true },
      { type: K.CKA_VALUE, value: Buffer.from(key) },
    ];
    const pending = this.#s.asSecurityOfficer(() => this.#s.step('creating the trusted KEK as the Security Officer', () => p.C_CreateObject(this.#s.session, template)));
    let failure: unknown;
    try {
      this.#s.asUser(() => {
        const made = this.#s.step(`copying the trusted KEK into the private ${handle}`, () =>
          p.C_CopyObject(this.#s.session, pending, [
            { type: K.CKA_PRIVATE, value: true },
            { type: K.CKA_LABEL, value: handle },
          ]),
        );
        // The token must have kept what makes the KEK worth having; otherwise it is not left in place.
        const problem = this.#notTrustedKek(made);
        if (problem !== undefined) {
          p.C_DestroyObject(this.#s.session, made);
          throw new CustodyError('TOKEN_ERROR', `token "${this.#s.token.label}" did not keep the KEK ${handle} as required (${problem}); nothing was added`);
        }
      });
    } catch (error) {
      failure = error;
    }
    // The public KEK goes at once, whatever happened: a read-write session may destroy a public object without a login.
    try {
      p.C_DestroyObject(this.#s.session, pending);
    } catch (error) {
      const left = `the public KEK "${pendingLabel}" could not be destroyed on token "${this.#s.token.label}" (${ckrName(error) ?? String(error)}): destroy it at once (the next \`joinkeep kek add\` also removes it)`;
      if (failure === undefined) this.undo(label);
      throw new CustodyError('TOKEN_ERROR', failure instanceof Error ? `${failure.message}; and ${left}` : left);
    }
    if (failure !== undefined) throw failure;
  }

  /** Removes the KEK again (a later token failed); the reason it could not, if so. */
  undo(label: string): string | undefined {
    try {
      this.#s.asUser(() => {
        for (const object of this.#find([{ type: pkcs11Lib().CKA_LABEL, value: kekHandle(label) }])) this.#s.module.pkcs11.C_DestroyObject(this.#s.session, object);
      });
      return undefined;
    } catch (error) {
      return `token "${this.#s.token.label}" (${error instanceof Error ? error.message : String(error)})`;
    }
  }

  close(): void {
    this.#s.close();
  }

  /** Public KEKs left by a run that ended between the SO's creation and the user's copy. */
  #removePending(): void {
    const K = pkcs11Lib();
    for (const object of this.#find([{ type: K.CKA_PRIVATE, value: false }])) {
      const label = this.#s.module.pkcs11.C_GetAttributeValue(this.#s.session, object, [{ type: K.CKA_LABEL }])[0]?.value;
      if (Buffer.isBuffer(label) && label.toString('utf8').startsWith(PENDING_PREFIX)) this.#s.module.pkcs11.C_DestroyObject(this.#s.session, object);
    }
  }

  #notTrustedKek(object: ObjectHandle): string | undefined {
    const K = pkcs11Lib();
    const expected: [string, number, boolean][] = [
      ['CKA_PRIVATE', K.CKA_PRIVATE, true],
      ['CKA_TRUSTED', K.CKA_TRUSTED, true],
      ['CKA_SENSITIVE', K.CKA_SENSITIVE, true],
      ['CKA_EXTRACTABLE', K.CKA_EXTRACTABLE, false],
      ['CKA_WRAP', K.CKA_WRAP, true],
      ['CKA_SIGN', K.CKA_SIGN, false],
      ['CKA_DERIVE', K.CKA_DERIVE, false],
    ];
    for (const [name, type, value] of expected) {
      const v = this.#s.module.pkcs11.C_GetAttributeValue(this.#s.session, object, [{ type }])[0]?.value;
      const actual = Buffer.isBuffer(v) && v.length > 0 && v[0] !== 0;
      if (actual !== value) return `${name}=${actual}`;
    }
    return undefined;
  }

  #find(template: Template): ObjectHandle[] {
    const K = pkcs11Lib();
    const p = this.#s.module.pkcs11;
    p.C_FindObjectsInit(this.#s.session, [{ type: K.CKA_CLASS, value: K.CKO_SECRET_KEY }, { type: K.CKA_TOKEN, value: true }, ...template]);
    try {
      return p.C_FindObjects(this.#s.session, 1000);
    } finally {
      p.C_FindObjectsFinal(this.#s.session);
    }
  }
}
