import { afterEach, describe, expect, it, vi } from "vitest";
import { api, ApiError, setToken } from "./api";

function respond(status: number, body: unknown) {
  return vi.fn(async () => new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } }));
}

afterEach(() => {
  vi.unstubAllGlobals();
  localStorage.clear();
});

describe("api", () => {
  it("returns the JSON body", async () => {
    vi.stubGlobal("fetch", respond(200, { devices: [] }));
    expect(await api("/api/v1/devices")).toEqual({ devices: [] });
  });

  it("throws the server's error message, not a generic one", async () => {
    vi.stubGlobal("fetch", respond(404, { error: "no device 'x'" }));
    await expect(api("/api/v1/devices/x")).rejects.toEqual(new ApiError(404, "no device 'x'"));
  });

  it("asks for the token on 401 and sends it afterwards", async () => {
    const asked = vi.fn();
    window.addEventListener("edgemon-auth", asked);
    vi.stubGlobal("fetch", respond(401, { error: "a bearer token is required" }));
    await expect(api("/api/v1/devices")).rejects.toMatchObject({ status: 401 });
    expect(asked).toHaveBeenCalledTimes(1);
    window.removeEventListener("edgemon-auth", asked);

    setToken("s3cret");
    const fetch = respond(200, {});
    vi.stubGlobal("fetch", fetch);
    await api("/api/v1/devices");
    expect(fetch).toHaveBeenCalledWith("/api/v1/devices", expect.objectContaining({ headers: { Authorization: "Bearer s3cret" } }));
  });

  it("says when the server cannot be reached", async () => {
    vi.stubGlobal("fetch", vi.fn(async () => Promise.reject(new TypeError("Failed to fetch"))));
    await expect(api("/api/v1/devices")).rejects.toEqual(new ApiError(0, "cannot reach the server: Failed to fetch"));
  });
});
