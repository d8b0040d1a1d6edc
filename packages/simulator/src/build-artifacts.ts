#!/usr/bin/env node
/** CLI: node build-artifacts.js <outDir>  — writes all builds and manifest.json. */
import { buildArtifacts } from './artifacts.js';

const outDir = process.argv[2];
if (!outDir) {
  process.stderr.write('usage: build-artifacts <outDir>\n');
  process.exit(1);
}
const m = buildArtifacts({ outDir });
process.stdout.write(`${JSON.stringify(m, null, 2)}\n`);
