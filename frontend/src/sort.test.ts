import { describe, expect, it } from "vitest";
import type { DeviceSummary } from "./api";
import { sortDevices } from "./sort";

const device = (id: string, cpu: number | null, online = true, alerts = 0, alert_severity: DeviceSummary["alert_severity"] = null): DeviceSummary => ({
  id,
  first_seen: "2026-11-29T00:00:00Z",
  last_seen: "2026-11-29T00:00:00Z",
  last_ts: "2026-11-29T00:00:00Z",
  interval: 10,
  online,
  metrics: 1,
  alerts,
  alert_severity,
  headlines: cpu === null ? [] : [{ label: "CPU", key: "cpu-percent", value: cpu, unit: "%" }],
  config_drift: false,
  tags: {},
});

describe("sortDevices", () => {
  it("sorts by a headline value, missing last ascending, ties by id", () => {
    const ds = [device("b", 50), device("a", 50), device("c", null), device("d", 10)];
    expect(sortDevices(ds, "h:CPU", false).map((d) => d.id)).toEqual(["c", "d", "a", "b"]);
    expect(sortDevices(ds, "h:CPU", true).map((d) => d.id)).toEqual(["a", "b", "d", "c"]);
  });
  it("sorts by the worst firing alert, then how many", () => {
    const ds = [device("a", 1, true, 3, "warning"), device("b", 1, true, 1, "critical"), device("c", 1), device("d", 1, true, 1, "warning")];
    expect(sortDevices(ds, "alerts", true).map((d) => d.id)).toEqual(["b", "a", "d", "c"]);
  });
  it("puts offline devices first when sorting by status", () => {
    const ds = [device("a", 1), device("b", 1, false)];
    expect(sortDevices(ds, "status", false).map((d) => d.id)).toEqual(["b", "a"]);
  });
});
