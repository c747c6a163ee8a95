import { describe, expect, it } from "vitest";
import { formatAgo, formatBytes, formatValue, groupByPlugin, guessUnit } from "./format";

describe("formatValue", () => {
  it("shows the unit a key implies", () => {
    expect(formatValue("cpu-percent", 3.14159)).toBe("3.1 %");
    expect(formatValue("disk-usage-sda-percent", 22.2)).toBe("22.2 %");
    expect(formatValue("gpu-0-utilization-gpu", 87)).toBe("87.0 %");
    expect(formatValue("memory-total", 8 * 2 ** 30)).toBe("8.00 GiB");
    expect(formatValue("disk-io-sda-read_bytes", 1536)).toBe("1.50 KiB");
    expect(formatValue("gpu-0-temp_c", 55.4)).toBe("55 °C");
    expect(formatValue("gpu-0-power_w", 210.54)).toBe("210.5 W");
    expect(formatValue("cpu-freq_mhz", 2600)).toBe("2,600 MHz");
    expect(formatValue("agent-cycle_ms", 1.234)).toBe("1.23 ms");
    expect(formatValue("sensors-fan", 1200)).toBe("1,200");
    expect(formatValue("disk-io-vda-read_bytes_per_s", 3 * 2 ** 20)).toBe("3.00 MiB/s");
    expect(formatValue("disk-io-vda-read_count_per_s", 553.5)).toBe("553.5/s");
    expect(formatValue("system-uptime_s", 2788)).toBe("2,788 s");
  });
  it("shows a dash for a missing value", () => {
    expect(formatValue("cpu-percent", null)).toBe("–");
    expect(formatValue("cpu-percent", undefined)).toBe("–");
  });
});

describe("formatBytes", () => {
  it("uses binary units", () => {
    expect(formatBytes(0)).toBe("0 B");
    expect(formatBytes(1023)).toBe("1023 B");
    expect(formatBytes(1024)).toBe("1.00 KiB");
    expect(formatBytes(5 * 2 ** 40)).toBe("5.00 TiB");
    expect(formatBytes(-2048)).toBe("-2.00 KiB");
  });
});

describe("formatAgo", () => {
  const now = Date.parse("2026-11-29T10:00:00Z");
  it("says how long ago", () => {
    expect(formatAgo("2026-11-29T09:59:48Z", now)).toBe("12 s ago");
    expect(formatAgo("2026-11-29T09:55:00Z", now)).toBe("5 min ago");
    expect(formatAgo("2026-11-29T07:00:00Z", now)).toBe("3 h ago");
    expect(formatAgo("2026-11-27T10:00:00Z", now)).toBe("2 d ago");
    expect(formatAgo(null, now)).toBe("never");
    expect(formatAgo("2026-11-29T10:00:05Z", now)).toBe("0 s ago");
  });
});

describe("groupByPlugin", () => {
  it("groups flat keys by plugin in a stable order", () => {
    const groups = groupByPlugin({ "mine-x": 1, "disk-a": 2, "cpu-percent": 3, "cpu-core-0-percent": 4, solo: 5 });
    expect(groups.map(([p]) => p)).toEqual(["cpu", "disk", "mine", "solo"]);
    expect(groups[0][1]).toEqual([
      ["core-0-percent", "cpu-core-0-percent", 4],
      ["percent", "cpu-percent", 3],
    ]);
    expect(groups[3][1]).toEqual([["solo", "solo", 5]]);
  });
});

describe("declared units", () => {
  it("win over what the key suggests", () => {
    expect(formatValue("system-boot_time", 1795974371, "epoch_s")).toBe("2026-11-29 17:46:11 UTC");
    expect(formatValue("memory-total", 2048, "count")).toBe("2,048");
    expect(formatValue("x-connected", 1, "bool")).toBe("yes");
    expect(formatValue("disk-io-sda-read_time", 1500, "ms")).toBe("1,500 ms");
  });
  it("fall back to the key's name when none was declared", () => {
    expect(formatValue("cpu-percent", 3.14159, null)).toBe("3.1 %");
    expect(guessUnit("disk-io-vda-read_bytes_per_s")).toBe("B/s");
    expect(guessUnit("sensors-fan")).toBeNull();
  });
});
