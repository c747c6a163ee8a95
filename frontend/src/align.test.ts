import { describe, expect, it } from "vitest";
import { align, breakGaps } from "./align";

describe("align", () => {
  it("puts raw and downsampled series on one time axis", () => {
    const { xs, columns } = align([
      { metric: "a", downsampled: false, count: 2, points: [[1000, 1], [3000, 3]] },
      { metric: "b", downsampled: true, count: 9, bucket_ms: 2000, points: [[1000, 0, 2, 1], [5000, 4, 6, 5]] },
    ]);
    expect(xs).toEqual([1000, 3000, 5000]);
    expect(columns).toEqual([
      [1, 3, null],
      [1, null, 5],
      [0, null, 4],
      [2, null, 6],
    ]);
  });
});

describe("breakGaps", () => {
  it("marks a step much longer than the usual one, so the line breaks there", () => {
    expect(breakGaps([0, 10, 20, 30, 200, 210, 220])).toEqual([0, 10, 20, 30, 40, 200, 210, 220]);
  });
  it("leaves a regular series alone", () => {
    expect(breakGaps([0, 10, 20, 31, 40])).toEqual([0, 10, 20, 31, 40]);
    expect(breakGaps([5, 6])).toEqual([5, 6]);
  });
  it("gives the chart a null at the marker for every series", () => {
    const s = (metric: string, pts: number[]) => ({ metric, points: pts.map((t) => [t, 1]), downsampled: false }) as never;
    const { xs, columns } = align([s("a", [0, 10, 20, 30, 200]), s("b", [0, 10, 20, 30, 200])]);
    expect(xs).toEqual([0, 10, 20, 30, 40, 200]);
    expect(columns[0]).toEqual([1, 1, 1, 1, null, 1]);
    expect(columns[1][4]).toBeNull();
  });
});
