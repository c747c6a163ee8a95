import { describe, expect, it } from "vitest";
import type { DeviceSummary } from "./api";
import { matchesSearch } from "./search";

const device = (id: string, tags: Record<string, string>): DeviceSummary => ({
  id,
  first_seen: null,
  last_seen: null,
  last_ts: null,
  interval: 10,
  online: true,
  metrics: 1,
  alerts: 0,
  alert_severity: null,
  headlines: [],
  config_drift: false,
  tags,
});

describe("matchesSearch", () => {
  const press = device("press-17", { site: "berlin", line: "3" });
  it("matches the id anywhere", () => {
    expect(matchesSearch(press, "ss-1")).toBe(true);
    expect(matchesSearch(press, "lathe")).toBe(false);
  });
  it("matches a tag written name=value, by the value's start", () => {
    expect(matchesSearch(press, "site=berlin")).toBe(true);
    expect(matchesSearch(press, "site=ber")).toBe(true);
    expect(matchesSearch(press, "site=paris")).toBe(false);
    expect(matchesSearch(press, "floor=1")).toBe(false);
  });
});
