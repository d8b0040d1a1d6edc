export * from './fleet.js';
export * from './reaper.js';
export * from './liar.js';
export { Rng } from './sim/prng.js';
