import type { SeriesData } from "./api";

/** Merge series on one time axis (union of timestamps; gaps as null). Downsampled series bring min/max. */
export function align(series: SeriesData[]): { xs: number[]; columns: (number | null)[][] } {
  const times = new Set<number>();
  for (const s of series) for (const p of s.points) if (p[0] !== null) times.add(p[0]);
  const xs = [...times].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const columns: (number | null)[][] = [];
  for (const s of series) {
    const avg: (number | null)[] = new Array(xs.length).fill(null);
    const lo: (number | null)[] = new Array(xs.length).fill(null);
    const hi: (number | null)[] = new Array(xs.length).fill(null);
    for (const p of s.points) {
      if (p[0] === null) continue;
      const i = index.get(p[0])!;
      if (s.downsampled) {
        lo[i] = p[1];
        hi[i] = p[2];
        avg[i] = p[3];
      } else avg[i] = p[1];
    }
    columns.push(avg);
    if (s.downsampled) columns.push(lo, hi);
  }
  return { xs, columns };
}
