import type { DevAddr, Eui64, MacVersion, NetId } from '../protocol/index.js';

/*
 * The storage contract (STYLE rule 4): SQLite and PostgreSQL implement it and pass the same contract tests.
 * Storage never holds key plaintext: root keys and KEKs appear only as handles, or as sealed records that
 * the software keystore encrypted (AES-256-GCM) before handing them over.
 */

export interface DeviceRecord {
  readonly devEui: Eui64;
  readonly joinEui: Eui64;
  readonly macVersion: MacVersion;
  /** Custody handle of the AppKey (1.0.x: the only root key; 1.1: the application root key). */
  readonly appKeyHandle: string;
  /** Custody handle of the NwkKey; null for 1.0.x devices. */
  readonly nwkKeyHandle: string | null;
  readonly homeNetId: NetId;
  /** LoRaWAN 1.1 / TS002-1.1 NSID of the home network server, if bound to one. */
  readonly homeNsId: Eui64 | null;
  /** AS-ID of the application server that may receive the AppSKey; null if none is bound yet. */
  readonly asId: string | null;
  /** NetIDs allowed to learn the home network via HomeNSReq; null = any network we have an agreement with. */
  readonly roamingNetIds: readonly NetId[] | null;
  /** KEK the binding chose for the NS's session keys (commissioning); absent or null = the NS peer's own KEK. */
  readonly nsKekLabel?: string | null;
  /** KEK the binding chose for the AppSKey; absent or null = the AS peer's own KEK. */
  readonly asKekLabel?: string | null;
  readonly createdAt: Date;
}

/** Per-device join state as it is read and replaced inside reserveJoin's transaction. */
export interface JoinState {
  /** Last JoinNonce sent to the device (0 = none yet). One counter per device, across JoinEUIs. */
  readonly lastJoinNonce: number;
  /** DevNonce state per (JoinEUI, DevEUI): last DevNonce (null = none yet). */
  readonly lastDevNonce: number | null;
  /** Used random DevNonces (LoRaWAN ≤1.0.3), oldest first, bounded by the caller. */
  readonly usedDevNonces: readonly number[];
  /** Last accepted RJcount1 for (JoinEUI, DevEUI) (null = none yet). */
  readonly lastRjCount1: number | null;
}

/**
 * What a session was derived from. The AppSKey is never stored: on AppSKeyReq it is derived again
 * in custody from the root key and these inputs.
 */
export interface SessionRecord {
  /** Canonical upper-case hex, unique per device. */
  readonly sessionKeyId: string;
  readonly devEui: Eui64;
  readonly joinEui: Eui64;
  /** 'legacy' = LoRaWAN 1.0.x derivation (1.0 device, or 1.1 device with OptNeg 0); 'lorawan11' = OptNeg 1. */
  readonly scheme: 'legacy' | 'lorawan11';
  readonly joinNonce: number;
  /** DevNonce, or RJcount0/RJcount1 for rejoin answers: the value in the derivation's DevNonce slot. */
  readonly devNonce: number;
  readonly netId: NetId;
  readonly devAddr: DevAddr;
  readonly createdAt: Date;
}

/** A sealed key as the software keystore persists it. */
export interface SealedKeyRecord {
  readonly handle: string;
  /** The custody's KeyUsage: root, kek, receiving (an RSA private key, PKCS#8) or derivation. */
  readonly usage: 'root' | 'kek' | 'receiving' | 'derivation';
  /** nonce | ciphertext | tag, opaque to storage. */
  readonly sealed: Buffer;
  readonly createdAt: Date;
}

export interface PeerRecord {
  /** ns, as: Backend Interfaces peers; claim: a claim client (The Things Stack's Device Claiming Server) of an organisation. */
  readonly kind: 'ns' | 'as' | 'claim';
  /** Opaque id: `ns/<NetID>[/<NSID>]` or `as/<AS-ID>`. */
  readonly id: string;
  /** NetID for a network server, null for an AS. */
  readonly netId: NetId | null;
  /** NSID for a 1.1 network server registered with one. */
  readonly nsId: Eui64 | null;
  /** AS-ID for an application server, null for an NS. */
  readonly asId: string | null;
  /** SHA-256 of the bearer token, lower-case hex; null when the peer authenticates by client certificate only. */
  readonly tokenSha256: string | null;
  /** SHA-256 fingerprint of the peer's TLS client certificate (DER), lower-case hex; null when none is pinned. */
  readonly clientCertSha256: string | null;
  /** KEK the peer's session keys are wrapped under; null when none is agreed. */
  readonly kekLabel: string | null;
  /** Operator's explicit permission to send this peer session keys in clear when it has no KEK. */
  readonly allowClearKeys: boolean;
  readonly createdAt: Date;
}

export interface AuditEvent {
  readonly id?: number;
  readonly at: Date;
  /** Who did it: `cli`, `ns/000013`, `as/as-1`, `system`. */
  readonly actor: string;
  /** e.g. `join.accept`, `join.refuse`, `device.add`, `kek.add`, `peer.add`. */
  readonly action: string;
  /** What it is about, e.g. `device/0004A30B001C0530`. */
  readonly subject: string;
  /** `success`, or a result code such as `MICFailed`. */
  readonly outcome: string;
  /** Never keys; identifiers, counters, result codes. */
  readonly details: Readonly<Record<string, unknown>>;
  /** The organisation whose trail this is (commissioning); null or absent = the operator's only. */
  readonly organisation?: string | null;
}

/** A device maker, secure-element vendor or other Join Server whose signed batches Joinkeep accepts. */
export interface MakerRecord {
  /** The identity named in its batches (`maker`), unique. */
  readonly name: string;
  readonly kind: 'device-maker' | 'se-vendor' | 'join-server';
  /** RFC 7638 thumbprint of its signing key: the JWS `kid` of its batches. */
  readonly keyId: string;
  /** Its public signing key as a JWK (EC P-256 or Ed25519). */
  readonly publicJwk: Readonly<Record<string, unknown>>;
  readonly createdAt: Date;
}

export interface BatchRecord {
  readonly batchId: string;
  readonly maker: string;
  readonly kind: 'device-keys' | 'derived' | 'derivation-master' | 'transfer';
  /** SHA-256 of the signed payload, upper-case hex: the same batch id with other contents is a conflict. */
  readonly payloadSha256: string;
  readonly deviceCount: number;
  /** The batch's own creation time, as its maker signed it. */
  readonly createdAt: Date;
  readonly importedAt: Date;
}

/** A device whose root keys are in custody but which no buyer has claimed: its maker's inventory. */
export interface InventoryDevice {
  readonly devEui: Eui64;
  readonly joinEui: Eui64;
  readonly macVersion: MacVersion;
  readonly appKeyHandle: string;
  readonly nwkKeyHandle: string | null;
  readonly maker: string;
  readonly batchId: string;
  readonly profile: string | null;
  readonly serialNumber: string | null;
  /** SHA-256 of `DevEUI:claim code`, upper-case hex; null when the maker set no claim code. */
  readonly claimCodeHash: string | null;
  /**
   * The join state a transfer carries over from the sending Join Server: a LoRaWAN 1.1 device accepts only a JoinNonce
   * above the last it saw, and replayed Join-requests must stay refused. 0 and null for devices from a factory.
   */
  readonly lastJoinNonce: number;
  readonly lastDevNonce: number | null;
  readonly createdAt: Date;
}

/** A secure-element vendor's derivation master key, in custody under `keyHandle`. */
export interface DerivationKeyRecord {
  readonly id: string;
  readonly maker: string;
  readonly keyHandle: string;
  readonly batchId: string;
  readonly createdAt: Date;
}

/** Devices this Join Server sealed for another one; retired here once the receiver confirms. */
export interface TransferRecord {
  readonly batchId: string;
  /** The receiving Join Server, a registered maker of kind 'join-server' (its receipt is verified with its key). */
  readonly recipient: string;
  readonly devEuis: readonly Eui64[];
  readonly state: 'pending' | 'confirmed';
  readonly createdAt: Date;
  readonly confirmedAt: Date | null;
}

/** Where a device may be activated: its home network, and who receives its AppSKey. */
export type DeviceBinding = Pick<DeviceRecord, 'homeNetId' | 'homeNsId' | 'asId' | 'roamingNetIds'>;

// ---- Commissioning (docs/commissioning.md): organisations, API keys, ownership, claims, ownership transfers ----

export type OrganisationRole = 'device-maker' | 'se-vendor' | 'device-owner' | 'network-operator' | 'as-operator';

export interface OrganisationRecord {
  /** Slug, `^[a-z0-9][a-z0-9-]{1,62}$`. */
  readonly id: string;
  readonly name: string;
  readonly roles: readonly OrganisationRole[];
  /** NetIDs a network operator runs. */
  readonly netIds: readonly NetId[];
  /** NSIDs of its network servers. */
  readonly nsIds: readonly Eui64[];
  /** AS-IDs an application-server operator runs. */
  readonly asIds: readonly string[];
  readonly createdAt: Date;
}

export interface ApiKeyRecord {
  /** The public part of `jk_<id>_<secret>`: 16 chars of lower-case base32. */
  readonly id: string;
  /** null: an installation-operator key (made by the CLI only). */
  readonly organisation: string | null;
  readonly name: string;
  /** SHA-256 of the secret part, lower-case hex. The secret itself is never stored. */
  readonly secretSha256: string;
  readonly scopes: readonly string[];
  readonly createdAt: Date;
  readonly expiresAt: Date | null;
  readonly revokedAt: Date | null;
}

/** Who owns a device and how it may be claimed; the same for bound and unbound devices. */
export interface DeviceCommissioning {
  /** Owning organisation; null = unclaimed (a maker's stock) or, for bound devices, added by the operator. */
  readonly owner: string | null;
  readonly maker: string | null;
  readonly batchId: string | null;
  readonly profile: string | null;
  readonly serialNumber: string | null;
  /** claimCodeHash(DevEUI, code), upper-case hex; null = the device cannot be claimed with a code. */
  readonly claimCodeHash: string | null;
  /** A locked device cannot be claimed away from its owner with its claim code. */
  readonly claimLocked: boolean;
  readonly claimExpiresAt: Date | null;
  readonly claimedAt: Date | null;
}

export type FoundDevice =
  | { readonly bound: true; readonly device: DeviceRecord; readonly commissioning: DeviceCommissioning; readonly boundAt: Date | null }
  | { readonly bound: false; readonly device: InventoryDevice; readonly commissioning: DeviceCommissioning };

export interface OwnershipTransferRecord {
  /** UUID. */
  readonly id: string;
  readonly fromOrg: string;
  /** The recipient of a direct offer; null for a token offer (whoever presents the token). */
  readonly toOrg: string | null;
  /** SHA-256 of the one-time transfer token, lower-case hex; null for a direct offer. */
  readonly tokenSha256: string | null;
  readonly devEuis: readonly Eui64[];
  readonly state: 'offered' | 'accepted' | 'cancelled';
  readonly createdAt: Date;
  readonly expiresAt: Date | null;
  readonly decidedAt: Date | null;
  /** The organisation that accepted (= toOrg for a direct offer). */
  readonly acceptedBy: string | null;
}

export interface ClaimChange {
  readonly owner: string;
  /** The owner the caller read (null = unclaimed): if it changed meanwhile, the claim changes nothing. */
  readonly expectOwner: string | null;
  /** The claim code's hash from now on (the same one, or a regenerated one's). */
  readonly claimCodeHash: string | null;
  readonly locked: boolean;
  readonly expiresAt: Date | null;
  readonly at: Date;
}

export type OwnedBinding = DeviceBinding & { readonly nsKekLabel: string | null; readonly asKekLabel: string | null };

export interface OwnedDeviceFilter extends ListOptions {
  readonly bound?: boolean;
  readonly joinEui?: Eui64;
  readonly macVersion?: string;
  readonly batchId?: string;
}

/**
 * Storage for commissioning. Every mutating method runs in one transaction together with its audit events, and a
 * refused call changes nothing. `owner` null in the *Owned* methods means the installation operator (any owner).
 */
export interface CommissioningStore {
  insertOrganisation(o: OrganisationRecord): Promise<void>;
  getOrganisation(id: string): Promise<OrganisationRecord | undefined>;
  listOrganisations(o?: ListOptions): Promise<{ items: OrganisationRecord[]; next?: string }>;
  updateOrganisation(o: OrganisationRecord): Promise<boolean>;

  insertApiKey(k: ApiKeyRecord): Promise<void>;
  getApiKey(id: string): Promise<ApiKeyRecord | undefined>;
  /** The keys of one organisation, or (null) the operator keys. */
  listApiKeys(organisation: string | null): Promise<ApiKeyRecord[]>;
  revokeApiKey(id: string, at: Date): Promise<boolean>;

  setMakerOrganisation(maker: string, organisation: string | null): Promise<boolean>;
  /** Organisation of each maker name (makers without one are absent). */
  makerOrganisations(): Promise<Map<string, string>>;
  setPeerOrganisation(peerId: string, organisation: string | null): Promise<boolean>;
  peerOrganisation(peerId: string): Promise<string | null | undefined>;

  /** A device wherever it is, bound (devices) or not (device_inventory). */
  findDevice(devEui: Eui64): Promise<FoundDevice | undefined>;
  /** Devices visible to `organisation` (owner = it, or unclaimed stock of its makers); null = all. Ordered by DevEUI. */
  listOwnedDevices(organisation: string | null, o?: OwnedDeviceFilter): Promise<{ items: FoundDevice[]; next?: string }>;
  /** Gives a device to `c.owner` (moving it to the inventory first when it is bound: sessions deleted). False if the owner changed meanwhile. */
  claimDevice(devEui: Eui64, c: ClaimChange, audit: readonly AuditEvent[]): Promise<boolean>;
  /** Binds devices of `owner`: inventory rows move to devices with their join state; bound rows get the new binding. */
  bindOwnedDevices(owner: string | null, devEuis: readonly Eui64[], binding: OwnedBinding, at: Date, audit: readonly AuditEvent[]): Promise<DeviceRecord[]>;
  /** Moves bound devices of `owner` back to the inventory, keeping owner and join state; sessions deleted. */
  unbindOwnedDevices(owner: string | null, devEuis: readonly Eui64[], audit: readonly AuditEvent[]): Promise<void>;
  /** Returns devices of `owner` to their maker's stock: unbound, owner null, unlocked; sessions deleted. */
  unclaimOwnedDevices(owner: string | null, devEuis: readonly Eui64[], audit: readonly AuditEvent[]): Promise<void>;
  /** Sets the claim code hash / lock / expiry of a device of `owner`. */
  updateClaim(owner: string | null, devEui: Eui64, claim: { claimCodeHash: string | null; locked: boolean; expiresAt: Date | null }, audit: readonly AuditEvent[]): Promise<void>;
  /** Forgets the DevNonces seen from a device (bound or not); JoinNonce untouched. False if unknown. */
  resetDevNonces(devEui: Eui64, audit: readonly AuditEvent[]): Promise<boolean>;

  insertOwnershipTransfer(t: OwnershipTransferRecord, audit: readonly AuditEvent[]): Promise<void>;
  getOwnershipTransfer(id: string): Promise<OwnershipTransferRecord | undefined>;
  findOwnershipTransferByTokenSha256(tokenSha256: string): Promise<OwnershipTransferRecord | undefined>;
  /** Transfers from or to `organisation`, newest first. */
  listOwnershipTransfers(organisation: string, o?: ListOptions): Promise<{ items: OwnershipTransferRecord[]; next?: string }>;
  /** Accepts an offered transfer: every device moves from fromOrg to `toOrg`, unbound (sessions deleted) and unlocked. */
  acceptOwnershipTransfer(id: string, toOrg: string, at: Date, audit: readonly AuditEvent[]): Promise<void>;
  cancelOwnershipTransfer(id: string, at: Date, audit: readonly AuditEvent[]): Promise<boolean>;
}

/** What an imported batch writes, all in one transaction. */
export interface BatchImport {
  readonly batch: BatchRecord;
  readonly inventory: readonly InventoryDevice[];
  readonly derivationKey?: DerivationKeyRecord | undefined;
  /** One per batch and one per device. */
  readonly audit: readonly AuditEvent[];
}

export interface ListOptions {
  readonly limit?: number;
  /** Opaque cursor from the previous page. */
  readonly after?: string;
}

/**
 * The decision reserveJoin runs inside its transaction, with the device's row locked:
 * either commit the new state (and the session it creates), or refuse and change nothing.
 */
export type JoinDecision<R> =
  | { readonly commit: JoinState; readonly session: SessionRecord; readonly audit?: AuditEvent }
  | { readonly refuse: R };

/** A device's join state as one row: its JoinNonce counter and the DevNonce state of one JoinEUI (null if none yet). */
export interface JoinRow {
  readonly last_join_nonce: number;
  readonly state_dev_eui: string | null;
  readonly last_dev_nonce: number | null;
  readonly used_dev_nonces: string | null;
  readonly last_rj_count1: number | null;
}

/**
 * A device's join state (JoinNonce counter and the DevNonce state of its JoinEUI) as read together with the device
 * by getDeviceForJoin. Passed back to reserveJoin, it lets the storage decide on it instead of reading the state
 * again; the storage then writes only if the state is still exactly this one, and otherwise reads it and decides
 * again. Opaque to callers.
 */
export interface SeenJoinState {
  readonly devEui: Eui64;
  readonly joinEui: Eui64;
  readonly row: JoinRow;
}

export interface ReserveJoinOptions {
  /** The device's most recent sessions kept after this one is written. */
  readonly sessionLimit: number;
  readonly seen?: SeenJoinState | undefined;
}

/**
 * Told each group of the join path's group commit that wrote something, once its COMMIT returned: how many
 * reservations and audit events it delivered, and the seconds its durable write took (for metrics; see
 * `observeGroupCommits` on SqliteStorage and PostgresStorage).
 */
export type GroupCommitObserver = (size: number, seconds: number) => void;

export type ReserveJoinResult<R> =
  | { readonly committed: JoinState; readonly session: SessionRecord }
  | { readonly refused: R };

export interface Storage extends CommissioningStore {
  readonly kind: 'sqlite' | 'postgres';

  /** Applies pending migrations; refuses to run against a schema newer than this build knows. */
  migrate(): Promise<void>;

  /**
   * Readies what the join path needs, so that the first Join-requests after a start do not wait for it: `serve` calls
   * it before it listens, since a join storm can follow a restart. After migrate().
   */
  prepareForJoins(): Promise<void>;

  // Devices
  insertDevice(device: DeviceRecord): Promise<void>;
  getDevice(devEui: Eui64): Promise<DeviceRecord | undefined>;
  /** getDevice, and in the same statement the device's join state under its own JoinEUI (for reserveJoin's `seen`). */
  getDeviceForJoin(devEui: Eui64): Promise<{ readonly device: DeviceRecord; readonly seen: SeenJoinState } | undefined>;
  listDevices(options?: ListOptions): Promise<{ items: DeviceRecord[]; next?: string }>;
  deleteDevice(devEui: Eui64): Promise<boolean>;
  /** True when at least one device uses this JoinEUI (used to decide UnknownReceiver). */
  servesJoinEui(joinEui: Eui64): Promise<boolean>;

  /**
   * Current join state of (DevEUI, JoinEUI), without locking; a device never joined reads as all-initial.
   * Throws StorageError DEVICE_NOT_FOUND for a device that does not exist.
   */
  getJoinState(devEui: Eui64, joinEui: Eui64): Promise<JoinState>;

  /**
   * Runs `decide` on the current join state in one transaction that holds an exclusive lock on the device
   * (PostgreSQL `SELECT … FOR UPDATE`, SQLite `BEGIN IMMEDIATE`), and commits its result durably before
   * resolving: the new state, the session record (keeping the `sessionLimit` most recent per device), and
   * the audit event if given. If `decide` refuses or throws, nothing changes.
   * `decide` must be free of side effects: after a PostgreSQL serialization failure or deadlock, or a late
   * SQLite busy error, the transaction is retried and `decide` runs again on the then-current state.
   * Throws StorageError DEVICE_NOT_FOUND if the device disappeared.
   * With `seen` (from getDeviceForJoin, for the same DevEUI and JoinEUI) the storage may decide on that state without
   * reading it again; whatever it decided on, it writes only if that is still the device's state when it writes.
   */
  reserveJoin<R>(
    devEui: Eui64,
    joinEui: Eui64,
    decide: (current: JoinState) => JoinDecision<R>,
    options: ReserveJoinOptions,
  ): Promise<ReserveJoinResult<R>>;

  getSession(devEui: Eui64, sessionKeyId: string): Promise<SessionRecord | undefined>;
  listSessions(devEui: Eui64): Promise<SessionRecord[]>;

  // Peers
  insertPeer(peer: PeerRecord): Promise<void>;
  findPeerByTokenSha256(tokenSha256: string): Promise<PeerRecord | undefined>;
  findPeerByClientCertSha256(fingerprint: string): Promise<PeerRecord | undefined>;
  /** NS peers registered for a NetID (any NSID). */
  findNetworkServers(netId: NetId): Promise<PeerRecord[]>;
  findApplicationServer(asId: string): Promise<PeerRecord | undefined>;
  /** Every peer, or those of one organisation. */
  listPeers(filter?: { readonly organisation?: string }): Promise<PeerRecord[]>;

  // Sealed keys of the software keystore
  insertKeyRecord(record: SealedKeyRecord): Promise<void>;
  /** Every record in one transaction, or none: a handle already held fails the call with KEY_RECORD_EXISTS. */
  insertKeyRecords(records: readonly SealedKeyRecord[]): Promise<void>;
  /** Deletes the records of `handles` in one transaction (handles not held are ignored); the number deleted. */
  deleteKeyRecords(handles: readonly string[]): Promise<number>;
  getKeyRecord(handle: string): Promise<SealedKeyRecord | undefined>;
  listKeyRecords(): Promise<Omit<SealedKeyRecord, 'sealed'>[]>;
  deleteKeyRecord(handle: string): Promise<boolean>;

  // Personalization: makers, batches, inventory (docs/specs/sealed-batch.md)
  insertMaker(maker: MakerRecord): Promise<void>;
  getMaker(name: string): Promise<MakerRecord | undefined>;
  findMakerByKeyId(keyId: string): Promise<MakerRecord | undefined>;
  listMakers(): Promise<MakerRecord[]>;
  /** Imported batches by id, of every maker or of the makers named. */
  listBatches(options?: ListOptions & { readonly makers?: readonly string[] }): Promise<{ items: BatchRecord[]; next?: string }>;
  getBatch(batchId: string): Promise<BatchRecord | undefined>;
  /** The DevEUIs among `devEuis` already known, as devices or in an inventory. */
  findKnownDevEuis(devEuis: readonly Eui64[]): Promise<Eui64[]>;
  /**
   * Writes a batch, its inventory, its derivation key and its audit events in one transaction. Fails with
   * BATCH_EXISTS if the batch id is taken and DEVICE_EXISTS if a DevEUI is known, writing nothing.
   */
  importBatch(batch: BatchImport): Promise<void>;
  getInventoryDevice(devEui: Eui64): Promise<InventoryDevice | undefined>;
  listInventory(options?: ListOptions & { readonly maker?: string; readonly batchId?: string }): Promise<{ items: InventoryDevice[]; next?: string }>;
  getDerivationKey(id: string): Promise<DerivationKeyRecord | undefined>;
  insertTransfer(transfer: TransferRecord): Promise<void>;
  getTransfer(batchId: string): Promise<TransferRecord | undefined>;
  /**
   * Marks a pending transfer confirmed and removes its devices (bound or in the inventory, with their join state and
   * sessions) in one transaction; returns the custody handles of their root keys, for the caller to delete.
   */
  confirmTransfer(batchId: string, audit: readonly AuditEvent[], at: Date): Promise<string[]>;
  /**
   * Moves inventory devices to `devices` with their home network and AS, in one transaction: all of them or none
   * (DEVICE_NOT_FOUND names the first DevEUI that is not in the inventory). Returns the devices as bound.
   */
  bindInventoryDevices(devEuis: readonly Eui64[], binding: DeviceBinding, audit: readonly AuditEvent[]): Promise<DeviceRecord[]>;

  // Audit trail (append-only)
  appendAudit(event: AuditEvent): Promise<void>;
  /** Oldest first, or newest first with `newestFirst` (the cursor then pages backwards). */
  listAudit(options?: ListOptions & { readonly subject?: string; readonly action?: string; readonly organisation?: string; readonly newestFirst?: boolean }): Promise<{ items: AuditEvent[]; next?: string }>;

  close(): Promise<void>;
}
