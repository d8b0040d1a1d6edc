export * from './fleet.js';
export * from './reaper.js';
