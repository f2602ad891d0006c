import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createRequire } from 'node:module';
import type * as Pkcs11js from 'pkcs11js';
import { CustodyError } from '../errors.js';

/*
 * One load of each PKCS#11 library per process, reference-counted. A Cryptoki library keeps process-wide state:
 * a second C_Initialize returns CKR_CRYPTOKI_ALREADY_INITIALIZED, C_Finalize ends every user's sessions, and the
 * user login is per token and application (a second C_Login returns CKR_USER_ALREADY_LOGGED_IN; C_Logout logs out
 * every session). So several custody instances in one process (tests, or a token pool) share one initialisation and
 * one login per token, and only the last one out logs out and finalizes — and only if this registry did the
 * C_Initialize / C_Login itself (another PKCS#11 client in the process keeps its own).
 *
 * This registry is per JavaScript thread (module state is per isolate) while the native library is per process.
 * The worker pool (worker-pool.ts) therefore keeps the lifecycle on the main thread: the main thread initialises
 * and logs in first and holds both until every worker has ended; a worker's C_Initialize / C_Login then return
 * ALREADY_INITIALIZED / ALREADY_LOGGED_IN, so the worker's registry never finalizes or logs out (only dlclose, which
 * the dynamic loader reference-counts).
 */

export type Pkcs11Lib = typeof Pkcs11js;
export type Pkcs11 = Pkcs11js.PKCS11;
export type ObjectHandle = Pkcs11js.Handle;

let lib: Pkcs11Lib | undefined;

/** pkcs11js is CommonJS with properties set at run time, so it is required rather than imported by name. */
export function pkcs11Lib(): Pkcs11Lib {
  return (lib ??= createRequire(import.meta.url)('pkcs11js') as Pkcs11Lib);
}

/** The CKR_ name of a pkcs11js error (e.g. 'CKR_PIN_INCORRECT'), or undefined for anything else. */
export function ckrName(error: unknown): string | undefined {
  if (!(error instanceof Error)) return undefined;
  const match = /^(CKR_[A-Z0-9_]+)/.exec(error.message);
  return match?.[1];
}

export interface LoadedModule {
  readonly path: string;
  readonly pkcs11: Pkcs11;
}

interface ModuleEntry extends LoadedModule {
  refs: number;
  readonly initializedHere: boolean;
  readonly logins: Map<string, LoginEntry>;
}

interface LoginEntry {
  refs: number;
  /** HMAC of the PIN under a per-process key: a later instance with another PIN is refused, not silently let in. */
  readonly pinMac: Buffer;
  readonly loggedInHere: boolean;
}

const modules = new Map<string, ModuleEntry>();
const pinMacKey = randomBytes(32);

export function acquireModule(path: string): LoadedModule {
  const existing = modules.get(path);
  if (existing) {
    existing.refs++;
    return existing;
  }
  const { PKCS11 } = pkcs11Lib();
  const pkcs11 = new PKCS11();
  try {
    pkcs11.load(path);
  } catch (error) {
    throw new CustodyError('TOKEN_UNAVAILABLE', `cannot load the PKCS#11 module ${path}: ${error instanceof Error ? error.message : String(error)}`);
  }
  let initializedHere = true;
  try {
    // Worker threads share this native library and call it concurrently (one session each): CKF_OS_LOCKING_OK lets
    // the library lock with the OS's primitives. C_Initialize(NULL) would declare a single-threaded application
    // (SoftHSM2 then disables its mutexes). A worker's own call returns CKR_CRYPTOKI_ALREADY_INITIALIZED (below).
    pkcs11.C_Initialize({ flags: pkcs11Lib().CKF_OS_LOCKING_OK });
  } catch (error) {
    if (ckrName(error) !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED') {
      closeQuietly(pkcs11);
      throw new CustodyError('TOKEN_UNAVAILABLE', `C_Initialize of the PKCS#11 module ${path} failed: ${ckrName(error) ?? String(error)}`);
    }
    initializedHere = false; // another PKCS#11 client in this process initialised the library; it finalizes it too
  }
  const entry: ModuleEntry = { path, pkcs11, refs: 1, initializedHere, logins: new Map() };
  modules.set(path, entry);
  return entry;
}

export function releaseModule(module: LoadedModule): void {
  const entry = modules.get(module.path);
  if (entry === undefined || entry !== module) return;
  if (--entry.refs > 0) return;
  modules.delete(entry.path);
  if (entry.initializedHere) {
    try {
      entry.pkcs11.C_Finalize();
    } catch {
      // CKR_CRYPTOKI_NOT_INITIALIZED: someone finalized already; nothing left to release
    }
  }
  closeQuietly(entry.pkcs11);
}

/** Logs the user in on the token of `slotKey` once per process; later instances must present the same PIN. */
export function acquireLogin(module: LoadedModule, slotKey: string, session: ObjectHandle, pin: string, tokenLabel: string): void {
  const entry = modules.get(module.path);
  if (entry === undefined) throw new CustodyError('TOKEN_UNAVAILABLE', `the PKCS#11 module ${module.path} is not loaded`);
  const pinMac = createHmac('sha256', pinMacKey).update(pin).digest();
  const login = entry.logins.get(slotKey);
  if (login) {
    if (!timingSafeEqual(login.pinMac, pinMac)) throw new CustodyError('TOKEN_UNAVAILABLE', `the PIN for token "${tokenLabel}" is refused`);
    login.refs++;
    return;
  }
  let loggedInHere = true;
  try {
    entry.pkcs11.C_Login(session, pkcs11Lib().CKU_USER, pin);
  } catch (error) {
    const ckr = ckrName(error);
    if (ckr === 'CKR_USER_ALREADY_LOGGED_IN') {
      // Logged in by another PKCS#11 client of this process; the token cannot check this PIN again.
      loggedInHere = false;
    } else if (ckr === 'CKR_PIN_INCORRECT' || ckr === 'CKR_PIN_INVALID' || ckr === 'CKR_PIN_LEN_RANGE') {
      throw new CustodyError('TOKEN_UNAVAILABLE', `the PIN for token "${tokenLabel}" is refused (${ckr})`);
    } else if (ckr === 'CKR_PIN_LOCKED') {
      throw new CustodyError('TOKEN_UNAVAILABLE', `the user PIN of token "${tokenLabel}" is locked (CKR_PIN_LOCKED)`);
    } else {
      throw new CustodyError('TOKEN_UNAVAILABLE', `login to token "${tokenLabel}" failed: ${ckr ?? String(error)}`);
    }
  }
  entry.logins.set(slotKey, { refs: 1, pinMac, loggedInHere });
}

/** True when this registry holds a user login on the token of `slotKey` (a custody on it is open in this thread). */
export function hasRegisteredLogin(module: LoadedModule, slotKey: string): boolean {
  return modules.get(module.path)?.logins.has(slotKey) === true;
}

export function releaseLogin(module: LoadedModule, slotKey: string, session: ObjectHandle): void {
  const entry = modules.get(module.path);
  const login = entry?.logins.get(slotKey);
  if (entry === undefined || login === undefined) return;
  if (--login.refs > 0) return;
  entry.logins.delete(slotKey);
  if (login.loggedInHere) {
    try {
      entry.pkcs11.C_Logout(session);
    } catch {
      // CKR_USER_NOT_LOGGED_IN / CKR_SESSION_HANDLE_INVALID: already logged out
    }
  }
}

function closeQuietly(pkcs11: Pkcs11): void {
  try {
    pkcs11.close();
  } catch {
    // the library stays mapped; nothing else to do
  }
}
