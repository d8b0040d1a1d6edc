/** This package's own version, from its package.json (the one place it is written). */
import { createRequire } from 'node:module';

// dist/src/version.js → ../../package.json; a bundler inlines the JSON.
export const PRODUCT_VERSION: string = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;
