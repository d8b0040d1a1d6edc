/**
 * The crash tests' way in: a function the pipeline calls right after it has
 * journaled a step and before the step's side effects, so a test can kill -9
 * the agent at that exact point and check what recovery does. The pipeline
 * only calls what it is given; the CLI decides what that is.
 */
import fs from 'node:fs';
import type { StepName } from '@guts-upgrade/protocol';
import { sleep } from './util.js';

/**
 * A moment inside a step where a crash is worth testing on its own:
 * container-removed is after the docker driver removed the old container and
 * before it created the new one (only the journal holds its configuration);
 * override-written is after the compose driver pinned the new image in its
 * override file and before `up --no-start` (the file and the container
 * disagree); service-recreated is after the service's container was recreated
 * on the new image, stopped, before start; green-create, switch and stop-blue
 * are the blue-green phases (blue-green/run.ts).
 */
export type PausePoint = 'container-removed' | 'override-written' | 'service-recreated' | 'green-create' | 'switch' | 'stop-blue';

export type AfterJournal = (step: StepName | PausePoint) => Promise<void>;

/** What a real agent runs with: nothing. */
export const carryOn: AfterJournal = async () => undefined;

/** Writes "PID STEP" to markerFile and hangs for good once `at` is journaled, so the test knows when to kill. */
export function pauseAt(at: string, markerFile: string): AfterJournal {
  return async (step) => {
    if (step !== at) return;
    fs.writeFileSync(markerFile, `${process.pid} ${step}\n`);
    for (;;) await sleep(1000);
  };
}

/**
 * GUTS_UPGRADE_TEST_PAUSE_AT=<step> with GUTS_UPGRADE_TEST_PAUSE_FILE=<file>
 * (set by the crash tests, or by a systemd drop-in in the end-to-end suite)
 * pauses there; inert unless both are set.
 */
export function pauseHookFromEnv(env: NodeJS.ProcessEnv): AfterJournal {
  const at = env.GUTS_UPGRADE_TEST_PAUSE_AT;
  const marker = env.GUTS_UPGRADE_TEST_PAUSE_FILE;
  return at && marker ? pauseAt(at, marker) : carryOn;
}
