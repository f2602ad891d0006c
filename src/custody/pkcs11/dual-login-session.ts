import type { TrustedKekToken } from './trusted-kek.js';
import { CustodyError } from '../errors.js';
import { type LoadedModule, type ObjectHandle, acquireModule, ckrName, hasRegisteredLogin, pkcs11Lib, releaseModule } from './module.js';

/** What the Security Officer's work is for, in messages: "a trusted KEK is created" by `joinkeep kek add`. */
export interface DualLoginPurpose {
  readonly what: string;
  readonly command: string;
}

/**
 * One read-write session on a token, in a process where no custody holds a login to it, logged in step by step as the
 * user or as the Security Officer and out again after each step. An SO login would log the user out of every session
 * of the process (PKCS#11 v2.40 §5.6), so this never runs beside an open custody. Used to make trusted KEKs
 * (trusted-kek.ts) and to export root keys under a trusted batch key (trusted-export.ts).
 */
export class DualLoginSession {
  readonly module: LoadedModule;
  readonly token: TrustedKekToken;
  readonly session: ObjectHandle;
  readonly #purpose: DualLoginPurpose;

  private constructor(module: LoadedModule, token: TrustedKekToken, session: ObjectHandle, purpose: DualLoginPurpose) {
    this.module = module;
    this.token = token;
    this.session = session;
    this.#purpose = purpose;
  }

  static open(modulePath: string, token: TrustedKekToken, purpose: DualLoginPurpose): DualLoginSession {
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
        throw new CustodyError('TOKEN_UNAVAILABLE', `the custody of token "${token.label}" is open in this process: ${purpose.what} only before it is opened (\`${purpose.command}\`)`);
      }
      return new DualLoginSession(module, token, p.C_OpenSession(slot, K.CKF_SERIAL_SESSION | K.CKF_RW_SESSION), purpose);
    } catch (error) {
      releaseModule(module);
      if (error instanceof CustodyError) throw error;
      throw new CustodyError('TOKEN_UNAVAILABLE', `cannot open a session on token "${token.label}": ${ckrName(error) ?? String(error)}`);
    }
  }

  asUser<T>(body: () => T): T {
    return this.#loggedIn(pkcs11Lib().CKU_USER, 'user PIN', this.token.pin, body);
  }

  asSecurityOfficer<T>(body: () => T): T {
    return this.#loggedIn(pkcs11Lib().CKU_SO, 'Security Officer PIN', this.token.soPin, body);
  }

  /** Runs one PKCS#11 step; a failure becomes a TOKEN_ERROR that says which step and which token. */
  step<T>(what: string, body: () => T): T {
    try {
      return body();
    } catch (error) {
      if (error instanceof CustodyError) throw error;
      throw new CustodyError('TOKEN_ERROR', `${what} on token "${this.token.label}" failed: ${ckrName(error) ?? (error instanceof Error ? error.message : String(error))}`);
    }
  }

  destroyQuietly(object: ObjectHandle): void {
    try {
      this.module.pkcs11.C_DestroyObject(this.session, object);
    } catch {
      // gone already; a session object dies with the session at the latest (close)
    }
  }

  close(): void {
    try {
      // Also destroys every session object a failure left.
      this.module.pkcs11.C_CloseSession(this.session);
    } catch {
      // already closed
    }
    releaseModule(this.module);
  }

  #loggedIn<T>(userType: number, what: string, pin: string, body: () => T): T {
    const p = this.module.pkcs11;
    const label = this.token.label;
    try {
      p.C_Login(this.session, userType, pin);
    } catch (error) {
      const ckr = ckrName(error);
      if (ckr === 'CKR_PIN_INCORRECT' || ckr === 'CKR_PIN_INVALID' || ckr === 'CKR_PIN_LEN_RANGE') throw new CustodyError('TOKEN_UNAVAILABLE', `the ${what} for token "${label}" is refused (${ckr})`);
      if (ckr === 'CKR_PIN_LOCKED') throw new CustodyError('TOKEN_UNAVAILABLE', `the ${what} of token "${label}" is locked (CKR_PIN_LOCKED)`);
      if (ckr === 'CKR_USER_ALREADY_LOGGED_IN' || ckr === 'CKR_USER_ANOTHER_ALREADY_LOGGED_IN') {
        throw new CustodyError('TOKEN_UNAVAILABLE', `someone in this process is already logged in to token "${label}" (${ckr}): ${this.#purpose.what} only where no custody is open (\`${this.#purpose.command}\`)`);
      }
      throw new CustodyError('TOKEN_UNAVAILABLE', `login with the ${what} to token "${label}" failed: ${ckr ?? String(error)}`);
    }
    try {
      return body();
    } finally {
      try {
        p.C_Logout(this.session);
      } catch {
        // CKR_USER_NOT_LOGGED_IN: nothing to undo
      }
    }
  }
}
