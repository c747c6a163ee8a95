import { describe, expect, it } from "vitest";
import type { Alert, AlertEvent } from "./api-types";
import { alertPeriods, silencing } from "./alerts";

const ev = (state: AlertEvent["state"], at: string, severity: AlertEvent["severity"] = "warning", key = "disk-a"): AlertEvent => ({
  id: 0, rule: "disk_full", key, severity, state, at, value: null, message: "",
});
const now = (key: string, changed: string, state: Alert["state"] = "firing", rule = "disk_full"): Alert => ({
  device_id: "d", fingerprint: "f", rule, key, severity: "critical", state, since: changed, changed,
  value: null, message: "", source: "device", stale: false,
});

describe("alertPeriods", () => {
  it("pairs firing with resolved, keeps an escalation in one period, runs an open one to now", () => {
    const history = [
      ev("firing", "2026-01-01T00:09:00Z", "warning", "disk-b"),
      ev("resolved", "2026-01-01T00:05:00Z", "critical"),
      ev("firing", "2026-01-01T00:03:00Z", "critical"),
      ev("firing", "2026-01-01T00:01:00Z", "warning"),
    ];
    expect(alertPeriods(history, [])).toEqual([
      { key: "disk-a", rule: "disk_full", severity: "critical", from: Date.parse("2026-01-01T00:01:00Z"), to: Date.parse("2026-01-01T00:05:00Z") },
      { key: "disk-b", rule: "disk_full", severity: "warning", from: Date.parse("2026-01-01T00:09:00Z"), to: null },
    ]);
  });
  it("adds a firing alert whose events are not on this page of history", () => {
    expect(alertPeriods([], [now("cpu-percent", "2026-01-01T00:00:00Z"), now("x", "2026-01-01T00:00:00Z", "pending")])).toEqual([
      { key: "cpu-percent", rule: "disk_full", severity: "critical", from: Date.parse("2026-01-01T00:00:00Z"), to: null },
    ]);
  });
});

describe("silencing", () => {
  const s = { id: 1, matchers: { device: "press-*", rule: "disk_full" }, ends: "2026-12-24T00:00:00Z", comment: "disk swap" };
  it("matches every matcher's glob", () => {
    expect(silencing({ device_id: "press-17", rule: "disk_full", severity: "warning", key: "disk-a" }, [s])?.id).toBe(1);
    expect(silencing({ device_id: "press-17", rule: "cpu_high", severity: "warning", key: "cpu" }, [s])).toBeNull();
    expect(silencing({ device_id: "pressure", rule: "disk_full", severity: "warning", key: "disk-a" }, [s])).toBeNull();
  });
});
