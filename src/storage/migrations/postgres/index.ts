import type { Migration } from 'kysely';
import * as initial from './0001-initial.js';
import * as personalization from './0002-personalization.js';
import * as commissioning from './0003-commissioning.js';

/**
 * Every PostgreSQL migration this build knows, in order. Registered statically (no directory scan) because the
 * code runs from dist/ and may be bundled. Add a migration: create `NNNN-name.ts` next to this file and list it here.
 */
export const postgresMigrations: Readonly<Record<string, Migration>> = {
  '0001-initial': initial,
  '0002-personalization': personalization,
  '0003-commissioning': commissioning,
};
