export * from './harness.js';
export * from './measure.js';
