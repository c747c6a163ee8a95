// Which y-axis each series of a chart goes on: one axis per unit.

import type { SeriesData } from "./api";
import { guessUnit, type Unit } from "./format";

/** The scale of series whose unit nobody declared or can guess. */
export const NO_UNIT = "value";

/** The unit of each series: declared (`units`), else guessed from its key. */
export function seriesUnits(series: SeriesData[], units: Record<string, Unit | null>): (Unit | null)[] {
  return series.map((s) => units[s.metric] ?? guessUnit(s.metric));
}

/** One y-axis per unit, in order of first use: the first on the left, the next on the right, and so on. */
export function axesFor(units: (Unit | null)[]): { scale: string; unit: Unit | null; side: 1 | 3 }[] {
  const seen: (Unit | null)[] = [];
  for (const u of units) if (!seen.includes(u)) seen.push(u);
  return seen.map((unit, i) => ({ scale: unit ?? NO_UNIT, unit, side: i % 2 === 0 ? 3 : 1 }));
}
