export * from './lab.js';
export * from './guts-node.js';
export { BOOT_SCRIPT, MASKED_UNITS } from './boot-script.js';
