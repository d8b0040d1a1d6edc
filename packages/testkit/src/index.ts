export * from './fleet.js';
export * from './reaper.js';
export * from './liar.js';
