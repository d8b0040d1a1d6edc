import fs from 'node:fs';
import { CodedError, parseVersionOutput, upgradePath } from '@guts-upgrade/protocol';
import { parseMetrics } from '../node-client.js';
import { dirSize, existingAncestor, freeBytes, runArgv, sha256File } from '../util.js';
import { runStagedAs, type RunAs } from '../run-as.js';
import { checkLocalPathPolicy, requireTrustedSource } from '../trust-policy.js';
import { addCheck, type StepContext } from './context.js';

/** `<binary> --version` -> X.Y.Z or null. */
// Generous: on a loaded host an interpreter-based binary can take seconds to
// print its version, and a timeout here would be misread as a wrong build.
// `as`: a binary not yet trusted (a candidate) runs as that user, from a copy it can read.
export async function binaryVersion(binary: string, timeoutMs = 60_000, as: RunAs | null = null): Promise<{ version: string | null; output: string }> {
  const r = as ? await runStagedAs(binary, ['--version'], as, timeoutMs) : await runArgv([binary, '--version'], { timeoutMs });
  const output = (r.stdout + r.stderr).trim() + (r.timedOut ? ` (no answer within ${timeoutMs} ms; killed)` : '');
  return { version: r.code === 0 ? parseVersionOutput(r.stdout) : null, output: output.trim() };
}

/**
 * Read-only: the service and binary exist, the version path is allowed, and
 * there is disk for the backup and the artifact. Nothing is changed.
 */
export async function preflight(ctx: StepContext): Promise<void> {
  const { config, command } = ctx;
  if (command.kind === 'rollback') throw new CodedError('E_INTERNAL', 'preflight is for prepare/upgrade');
  requireTrustedSource(config, command.target.version);
  const exists = await ctx.driver.exists();
  addCheck(ctx, 'service-exists', exists.ok, exists.detail);
  if (!exists.ok) throw new CodedError('E_SERVICE_MISSING', exists.detail);

  // A container host: what is installed is the image its container runs.
  const current = ctx.driver.images ? await ctx.driver.images.current() : null;
  const installed = current ?? (await binaryVersion(config.node.binary));
  const running = await ctx.node.runningVersion();
  // The node to upgrade must be the process the agent runs. A node that answers while the
  // service is not running was started by someone else: stopping "ours" would not stop it,
  // the new build would fail to bind its port, and the old node would answer every check.
  if (running !== null && !(await ctx.driver.isActive())) {
    const where = notOursWhere(config, ctx.driver.kind);
    addCheck(ctx, 'node-is-ours', false, `guts-node ${running} answers on ${config.node.apiUrl}, but ${where}`);
    throw new CodedError(
      'E_FOREIGN_NODE',
      `guts-node ${running} answers on ${config.node.apiUrl}, but the agent does not run it (${where}); nothing was changed`,
    );
  }
  const from = installed.version ?? running;
  if (!from)
    throw new CodedError(
      'E_SERVICE_MISSING',
      `cannot tell the installed version: ${current ? `image ${current.imageId}` : config.node.binary} --version said ${JSON.stringify(installed.output.slice(0, 200))}`,
    );
  // A downgrade or a major is this host's policy (trust-policy.ts): a command's allowDowngrade or approvedMajor is not trusted.
  const path = upgradePath(from, command.target.version, { allowDowngrade: config.release.allowDowngrade });
  checkLocalPathPolicy(config, path);
  if (command.kind === 'upgrade' && path.migration === 'manual' && !config.commands.migrate) {
    throw new CodedError('E_CONFIG', `config commands.migrate: ${path.from} -> ${path.to} needs a manual migration and no migration command is configured`);
  }
  addCheck(ctx, 'version-path', true, `${path.from} -> ${path.to} (${path.kind}, migration ${path.migration})`);

  if (command.kind === 'upgrade') {
    // Room for the backup (data + binary + config) and the artifact (about a binary's size).
    // A container host keeps no binary file: the image goes to the engine, its archive to staging (about the old one's size).
    const binSize = current ? 0 : fs.statSync(config.node.binary).size;
    const cfgSize = fs.existsSync(config.node.config) ? fs.statSync(config.node.config).size : 0;
    const dataSize = dirSize(config.node.dataDir);
    const backupNeed = dataSize + binSize + cfgSize + 1024 * 1024;
    const artifactNeed = binSize * 2;
    const backupFree = await freeBytes(config.backup.dir);
    const stagingFree = await freeBytes(config.stagingDir);
    const sameFs = fs.statSync(existingAncestor(config.backup.dir)).dev === fs.statSync(existingAncestor(config.stagingDir)).dev;
    const margin = config.diskMarginBytes;
    const short = sameFs ? backupFree < backupNeed + artifactNeed + margin : backupFree < backupNeed + margin || stagingFree < artifactNeed + margin;
    const detail = `need ~${backupNeed} B for the backup in ${config.backup.dir} (${backupFree} B free) and ~${artifactNeed} B for the artifact in ${config.stagingDir} (${stagingFree} B free), margin ${margin} B`;
    addCheck(ctx, 'disk-space', !short, detail);
    if (short) throw new CodedError('E_DISK_SPACE', detail);
    ctx.save(current ? { oldImage: current.imageId } : { oldBinarySha: await sha256File(config.node.binary) });
    const metrics = await ctx.node.metricsText();
    ctx.save({ baseline: metrics ? parseMetrics(metrics) : null });
  }
  ctx.save({ fromVersion: path.from, toVersion: path.to, path });
  if (running && installed.version && running !== installed.version) {
    ctx.log.warn({ running, installed: installed.version }, 'the running node reports another version than the installed binary');
  }
}

/** Where the node is not running, as each driver would say it. */
function notOursWhere(config: StepContext['config'], kind: StepContext['driver']['kind']): string {
  switch (kind) {
    case 'process':
      return `no live pid in ${config.service.pidFile}`;
    case 'systemd':
      return `unit ${config.service.name} is not active`;
    case 'docker':
      return `container ${config.service.container} is not running`;
    case 'compose':
      return `service ${config.service.service} of ${config.service.file} is not running`;
  }
}
