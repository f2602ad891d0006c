import type { ApiRoutes } from '../context.js';
import { apiKeyRoutes } from './api-keys.js';
import { auditRoutes } from './audit.js';
import { bindingRoutes } from './bindings.js';
import { claimRoutes } from './claims.js';
import { deviceRoutes } from './devices.js';
import { peerRoutes } from './peers.js';
import { transferRoutes } from './transfers.js';
import { batchRoutes } from './batches.js';
import { organisationRoutes } from './organisations.js';
import { receivingKeyRoutes } from './receiving-key.js';

/** Every route group of /api/v1, in the order of the OpenAPI document. Add new groups here. */
export const apiRoutes: readonly ApiRoutes[] = [
  receivingKeyRoutes, batchRoutes, deviceRoutes, claimRoutes, bindingRoutes, transferRoutes, peerRoutes, auditRoutes, organisationRoutes, apiKeyRoutes,
];
