import { describe, expect, it } from "vitest";
import { align } from "./align";

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
