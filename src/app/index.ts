export * from './config.js';
export * from './errors.js';
export * from './init.js';
export * from './joinkeep.js';
export * from './serve.js';
