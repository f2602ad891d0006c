export * from './errors.js';
export * from './service.js';
export { defaultJoinSettings, type JoinContext } from './context.js';
