import type { SeriesData } from "./api";

/** Merge series on one time axis (union of timestamps; gaps as null). Downsampled series bring min/max. */
export function align(series: SeriesData[]): { xs: number[]; columns: (number | null)[][] } {
  const times = new Set<number>();
  for (const s of series) for (const p of s.points) if (p[0] !== null) times.add(p[0]);
  const xs = breakGaps([...times].sort((a, b) => a - b));
  const index = new Map(xs.map((x, i) => [x, i]));
  const columns: (number | null)[][] = [];
  for (const s of series) {
    const avg: (number | null)[] = new Array(xs.length).fill(null);
    const lo: (number | null)[] = new Array(xs.length).fill(null);
    const hi: (number | null)[] = new Array(xs.length).fill(null);
    for (const p of s.points) {
      if (p[0] === null) continue;
      const i = index.get(p[0]);
      if (i === undefined) continue;
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

/** A gap is a step longer than this many times the usual (median) step. */
export const GAP_FACTOR = 3;

/**
 * Times with a gap marker inserted after every step longer than GAP_FACTOR x the median step: a
 * time where no series has a value, so the chart (spanGaps false) breaks its lines there instead of
 * drawing across an outage.
 */
export function breakGaps(xs: number[]): number[] {
  if (xs.length < 3) return xs;
  const steps = xs.slice(1).map((x, i) => x - xs[i]).sort((a, b) => a - b);
  const usual = steps[Math.floor(steps.length / 2)];
  if (!(usual > 0)) return xs;
  const out: number[] = [xs[0]];
  for (let i = 1; i < xs.length; i++) {
    if (xs[i] - xs[i - 1] > GAP_FACTOR * usual) out.push(xs[i - 1] + usual);
    out.push(xs[i]);
  }
  return out;
}
