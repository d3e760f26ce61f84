/**
 * What the fleet benchmarks read from Linux's /proc: a process's resident memory and CPU time, the
 * whole machine's busy share and load, and the per-process limit on open files that bounds how many
 * connections one process can hold.
 */
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';

const CLOCK_TICKS = 100; // USER_HZ on Linux

/** The process's resident set (VmRSS), in bytes. */
export function rssBytes(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'));
  return Number(/(\d+)/.exec(line ?? '')?.[1] ?? Number.NaN) * 1024;
}

/** User + system CPU seconds the process has used. */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** The machine's busy and total CPU time so far (all cores), from /proc/stat. */
function machineTicks(): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = fields;
  const busy = user + nice + system + irq + softirq + steal;
  return { busy, total: busy + idle + iowait };
}

/**
 * Starts watching the whole machine; `read()` gives the share of all its cores that was busy since,
 * whoever used it (other processes included), and the load averages now.
 */
export function watchMachine(): { read(): { busyShare: number; load: string } } {
  const start = machineTicks();
  return {
    read() {
      const end = machineTicks();
      const total = end.total - start.total;
      return {
        busyShare: total > 0 ? (end.busy - start.busy) / total : 0,
        load: loadavg()
          .map((value) => value.toFixed(2))
          .join(' '),
      };
    },
  };
}

/** The machine in one line: its cores, and the load averages (1, 5, 15 min) at this moment. */
export const machineLoad = (): string =>
  `load average ${loadavg()
    .map((value) => value.toFixed(2))
    .join(' ')} on ${cpus().length} cores`;

/** This process's limit on open files (children inherit it): soft and hard. */
export function openFilesLimit(): { soft: number; hard: number } {
  const line = readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'));
  const [soft, hard] = (line ?? '').split(/\s{2,}/).slice(1, 3);
  const parse = (value: string | undefined) =>
    value === 'unlimited' ? Number.POSITIVE_INFINITY : Number(value);
  return { soft: parse(soft), hard: parse(hard) };
}

/**
 * The most connections one process can hold under the open-files limit, in whole thousands, leaving
 * a thousand descriptors for everything else (database, pipes, Redis, the runtime's own).
 */
export function connectionsPerProcess(): number {
  const { soft } = openFilesLimit();
  return Number.isFinite(soft) ? Math.floor((soft - 1000) / 1000) * 1000 : Number.POSITIVE_INFINITY;
}

export const mib = (bytes: number) => `${(bytes / 1024 ** 2).toFixed(0)} MiB`;
export const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;
export const percent = (share: number) => `${(share * 100).toFixed(1)}%`;
