/** Build identity and the version → storage-schema mapping. */

export type Fault = 'none' | 'exits' | 'never-ready' | 'corrupts' | 'lies' | 'degrades' | 'isolated';
export const FAULTS: readonly Fault[] = ['none', 'exits', 'never-ready', 'corrupts', 'lies', 'degrades', 'isolated'];

/** What a launcher bakes into a build: the version `--version` prints and an optional fault. */
export interface BuildIdentity {
  version: string;
  fault?: Fault;
  /** Free-form build label, only to make every build file distinct. */
  build?: string;
}

/** The version the lying build really runs while claiming 1.1.0. */
export const LIES_RUNTIME_VERSION = '1.0.1';

export const DEFAULT_IDENTITY: BuildIdentity = {
  version: process.env.GUTS_SIM_BUILD_VERSION ?? '1.0.0',
  fault: 'none',
};

export interface SemVer {
  major: number;
  minor: number;
  patch: number;
}

export function parseVersion(v: string): SemVer {
  const m = /^v?(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$/.exec(v.trim());
  if (!m) throw new Error(`not a semver version: ${JSON.stringify(v)}`);
  return { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]) };
}

/** Patch releases share a schema; each minor adds one; each major starts a new hundred. */
export function schemaForVersion(v: string): number {
  const s = parseVersion(v);
  return s.major * 100 + s.minor;
}

export function schemaMajor(schema: number): number {
  return Math.floor(schema / 100);
}

/** The version the process reports at runtime (differs from `--version` only for the lying build). */
export function runtimeVersion(id: BuildIdentity): string {
  return id.fault === 'lies' ? LIES_RUNTIME_VERSION : id.version;
}
