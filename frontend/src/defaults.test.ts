import { describe, expect, it } from "vitest";
import { defaultMetrics } from "./defaults";

describe("defaultMetrics", () => {
  it("opens with CPU, memory, the disks, the network rates and the GPUs the device has", () => {
    const keys = [
      "net-eth0-rx_bytes",
      "net-eth0-rx_bytes_per_s",
      "net-eth0-tx_bytes_per_s",
      "disk-usage-sdb-percent",
      "memory-percent",
      "cpu-percent",
      "disk-usage-sda-percent",
      "gpu-0-utilization-gpu",
      "cpu-cores-cpu0-percent",
    ];
    expect(defaultMetrics(keys)).toEqual([
      "cpu-percent",
      "memory-percent",
      "disk-usage-sda-percent",
      "disk-usage-sdb-percent",
      "net-eth0-rx_bytes_per_s",
      "net-eth0-tx_bytes_per_s",
      "gpu-0-utilization-gpu",
    ]);
  });
  it("is empty for a device with none of them, and bounded", () => {
    expect(defaultMetrics(["example-answer"])).toEqual([]);
    const disks = Array.from({ length: 10 }, (_, i) => `disk-usage-d${i}-percent`);
    expect(defaultMetrics(disks)).toHaveLength(8);
  });
});
