import { describe, expect, it } from "vitest";
import { buildDeviceUrl, buildOverviewUrl, follow, parseDeviceView, parseOverview, rangeParams, type DeviceView } from "./url";

describe("device view in the URL", () => {
  it("round-trips device, metrics, range and live", () => {
    const views: DeviceView[] = [
      { device: "press-17", metrics: ["cpu-percent", "memory-percent"], range: { preset: "24h" }, live: true },
      { device: "a:b.c_d-e", metrics: [], range: { from: "2026-11-01T00:00:00Z", to: "2026-11-02T00:00:00Z" }, live: false },
      { device: "dev 1/x", metrics: ["disk-usage-sda-percent"], range: { preset: "15m" }, live: false },
    ];
    for (const view of views) {
      const url = new URL(buildDeviceUrl(view), "http://x");
      expect(parseDeviceView(url.pathname, url.search)).toEqual(view);
    }
  });
  it("defaults to the last hour, live, and ignores junk", () => {
    expect(parseDeviceView("/devices/d1", "?range=bogus&m=&m=cpu-percent&m=cpu-percent")).toEqual({
      device: "d1",
      metrics: ["cpu-percent"],
      range: { preset: "1h" },
      live: true,
    });
    expect(parseDeviceView("/", "")).toBeNull();
    expect(parseDeviceView("/devices/a/b", "")).toBeNull();
  });
  it("gives the API relative times for presets", () => {
    expect(rangeParams({ preset: "7d" })).toEqual({ from: "-7d", to: "now" });
  });
});

describe("overview view in the URL", () => {
  it("round-trips search, sort and page", () => {
    const view = { q: "press", sort: "h:CPU" as const, desc: true, page: 3 };
    const url = new URL(buildOverviewUrl(view), "http://x");
    expect(parseOverview(url.search)).toEqual(view);
    expect(buildOverviewUrl({ q: "", sort: "id", desc: false, page: 1 })).toBe("/");
  });
  it("falls back on bad values", () => {
    expect(parseOverview("?sort=-color&page=-4")).toEqual({ q: "", sort: "id", desc: true, page: 1 });
  });
});

describe("follow", () => {
  const click = (extra: Partial<{ button: number; metaKey: boolean; ctrlKey: boolean; shiftKey: boolean }> = {}) => {
    let prevented = false;
    const e = { button: 0, metaKey: false, ctrlKey: false, shiftKey: false, altKey: false, ...extra, preventDefault: () => (prevented = true) };
    follow("/devices/x")(e);
    return prevented;
  };
  it("navigates in the app on a plain click only", () => {
    expect(click()).toBe(true);
    expect(window.location.pathname).toBe("/devices/x");
  });
  it("leaves Ctrl/Cmd/Shift and middle clicks to the browser (new tab or window)", () => {
    expect(click({ ctrlKey: true })).toBe(false);
    expect(click({ metaKey: true })).toBe(false);
    expect(click({ shiftKey: true })).toBe(false);
    expect(click({ button: 1 })).toBe(false);
  });
});
