/** The charts a device page opens with when the URL names none: CPU, memory, the disks, the network, the GPUs. */
const WANTED: RegExp[] = [
  /^cpu-percent$/,
  /^memory-percent$/,
  /^disk-usage-[^-]+-percent$/,
  /^net-[^-]+-(rx|tx)_bytes_per_s$/,
  /^gpu-[^-]+-utilization-gpu$/,
];

/** At most ``limit`` keys of ``keys``, in the order of ``WANTED`` (each pattern's keys sorted). */
export function defaultMetrics(keys: string[], limit = 8): string[] {
  const out: string[] = [];
  for (const pattern of WANTED) {
    for (const key of [...keys].sort()) {
      if (pattern.test(key) && !out.includes(key)) out.push(key);
    }
  }
  return out.slice(0, limit);
}
