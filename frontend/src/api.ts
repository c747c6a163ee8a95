// The only way the dashboard talks to the server: GET /api/v1/..., with the token if one was given.

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
  ) {
    super(message);
  }
}

const TOKEN_KEY = "edgemon-token";

export function setToken(token: string): void {
  localStorage.setItem(TOKEN_KEY, token);
}

export async function api<T>(path: string, signal?: AbortSignal): Promise<T> {
  const token = localStorage.getItem(TOKEN_KEY);
  let response: Response;
  try {
    response = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {}, signal });
  } catch (err) {
    if ((err as Error).name === "AbortError") throw err;
    throw new ApiError(0, `cannot reach the server: ${(err as Error).message}`);
  }
  const body = (await response.json().catch(() => null)) as { error?: string } | null;
  if (response.status === 401) window.dispatchEvent(new Event("edgemon-auth"));
  if (!response.ok) throw new ApiError(response.status, body?.error ?? `HTTP ${response.status}`);
  return body as T;
}

// The response types are generated from the server's OpenAPI document (api-types.ts), not written here.
export type { Device as DeviceDetail, DeviceSummary, Headline, Metric, Series as SeriesData } from "./api-types";

