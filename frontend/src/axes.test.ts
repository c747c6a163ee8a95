import { describe, expect, it } from "vitest";
import { axesFor, seriesUnits } from "./axes";

const s = (metric: string) => ({ metric, downsampled: false, count: 0, points: [] });

describe("chart axes", () => {
  it("gives each unit its own axis, alternating sides", () => {
    const units = seriesUnits([s("cpu-percent"), s("disk-io-sda-read_bytes_per_s"), s("memory-percent"), s("fan")], {
      "disk-io-sda-read_bytes_per_s": "B/s",
    });
    expect(units).toEqual(["%", "B/s", "%", null]);
    expect(axesFor(units)).toEqual([
      { scale: "%", unit: "%", side: 3 },
      { scale: "B/s", unit: "B/s", side: 1 },
      { scale: "value", unit: null, side: 3 },
    ]);
  });
  it("prefers the declared unit to the key's name", () => {
    expect(seriesUnits([s("system-boot_time")], { "system-boot_time": "epoch_s" })).toEqual(["epoch_s"]);
  });
});
