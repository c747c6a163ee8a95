import { describe, expect, it } from "vitest";
import { pluginStates } from "./plugins";

describe("pluginStates", () => {
  it("groups the attributes per plugin and puts problems first", () => {
    const attrs = {
      "agent-plugin-cpu-status": "loaded",
      "agent-plugin-cpu-version": "0.1.0",
      "agent-plugin-gpu_nvml-status": "unavailable",
      "agent-plugin-gpu_nvml-version": "0.1.0",
      "agent-plugin-gpu_nvml-reason": "NVML unavailable",
      "agent-plugin-acme-status": "failed",
      "agent-plugin-acme-version": "2.0",
      "agent-plugin-acme-reason": "edgemon_startup raised OSError: no bus (at acme.py:12)",
      "system-hostname": "press-17",
    };
    expect(pluginStates(attrs)).toEqual([
      { name: "acme", status: "failed", version: "2.0", reason: "edgemon_startup raised OSError: no bus (at acme.py:12)" },
      { name: "gpu_nvml", status: "unavailable", version: "0.1.0", reason: "NVML unavailable" },
      { name: "cpu", status: "loaded", version: "0.1.0" },
    ]);
  });

  it("hides the stale reason of a plugin that loads again", () => {
    const attrs = {
      "agent-plugin-acme-status": "loaded",
      "agent-plugin-acme-version": "2.0",
      "agent-plugin-acme-reason": "old failure",
    };
    expect(pluginStates(attrs)).toEqual([{ name: "acme", status: "loaded", version: "2.0" }]);
  });

  it("ignores keys that are not plugin states", () => {
    expect(pluginStates({ "agent-plugin-x": "1", "agent-plugins-loaded": "3" })).toEqual([]);
  });
});
