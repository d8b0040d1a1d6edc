/**
 * Who a process is: its pid plus its start time (field 22 of /proc/PID/stat,
 * in clock ticks since boot), so a pid the kernel has recycled for another
 * process is never mistaken for the one we recorded. Pid files written in the
 * "PID STARTTIME" form, the journal's lock and the test kit's reaper all use
 * these two functions, so they agree on what "the same process" means.
 */
import fs from 'node:fs';

/** The start time of a live process, or '' when it is gone (or there is no procfs). */
export function processStartTime(pid: number): string {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? '';
  } catch {
    return '';
  }
}

/** Whether pid runs and, when a start time is given, is still the process that had it. */
export function processAlive(pid: number, startTime?: string | null): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    // A zombie (exited, not yet reaped) is not alive.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return false;
  } catch {
    /* no procfs: trust kill(0) */
  }
  if (startTime) {
    const now = processStartTime(pid);
    if (now && now !== startTime) return false;
  }
  return true;
}
