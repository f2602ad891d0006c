import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { BEARER } from './auth.js';

/*
 * The OpenAPI 3.1 document, generated from the routes' own TypeBox schemas (so it cannot drift from what is served),
 * at GET /api/v1/openapi.json, and Swagger UI at /api/v1/docs. Each operation's `security` comes from its declared
 * scope (auth.ts).
 */

export const OPENAPI_PATH = '/api/v1/openapi.json';
export const DOCS_PATH = '/api/v1/docs';

export function addOpenApi(app: FastifyInstance, o: { version: string }): void {
  // On the root instance: @fastify/swagger's onRoute hook must see the routes of every plugin registered after it.
  app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Joinkeep REST API',
        version: o.version,
        description: 'Commissioning and personalization API of the Joinkeep LoRaWAN Join Server. Authenticate with an API key: `Authorization: Bearer jk_<id>_<secret>`. See docs/api/rest.md.',
        license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
      },
      components: {
        securitySchemes: {
          [BEARER]: { type: 'http', scheme: 'bearer', bearerFormat: 'jk_<id>_<secret>', description: 'An API key made with `joinkeep api-key create` or POST /api/v1/organisations/{id}/api-keys' },
        },
      },
    },
  });
  app.register(swaggerUi, { routePrefix: DOCS_PATH, staticCSP: true });
  app.register(async (scope) => {
    scope.get(OPENAPI_PATH, {
      config: { scope: 'public' },
      schema: {
        summary: 'This document (OpenAPI 3.1)',
        tags: ['meta'],
        operationId: 'getOpenApi',
        response: { 200: Type.Object({}, { additionalProperties: true, description: 'OpenAPI 3.1 document' }) },
      },
      handler: async () => scope.swagger(),
    });
  });
}
