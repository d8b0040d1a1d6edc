/**
 * The override file the compose driver owns, as plain functions: the doctor
 * names it without loading the engine client.
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import type { AgentConfig } from '../config.js';

export function overridePath(config: AgentConfig): string {
  return path.join(config.stateDir, 'compose', 'override.yml');
}

/** Compose v1 refuses to merge files of different `version`s: the override carries the operator's. */
export function overrideText(service: string, image: string, version: string | null): string {
  const doc = { ...(version ? { version } : {}), services: { [service]: { image } } };
  return `# Written by guts-upgrade-agent: pins the release image of ${service}. Do not edit.\n${YAML.stringify(doc)}`;
}

export function fileVersion(file: string): string | null {
  try {
    const v = (YAML.parse(fs.readFileSync(file, 'utf8')) as { version?: unknown } | null)?.version;
    return v === undefined || v === null ? null : String(v);
  } catch {
    return null;
  }
}
