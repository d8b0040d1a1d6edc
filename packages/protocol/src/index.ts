export * from './errors.js';
export * from './quorum.js';
export * from './chain.js';
export * from './version-path.js';
export * from './signature.js';
export * from './messages.js';
export * from './codec.js';
export * from './cli-args.js';
