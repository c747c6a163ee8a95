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

export interface Headline {
  cpu: number | null;
  memory: number | null;
  disk: number | null;
  gpu: number | null;
}

export interface DeviceSummary {
  id: string;
  first_seen: string;
  last_seen: string;
  last_ts: string;
  interval: number;
  online: boolean;
  metrics: number;
  alerts: number;
  headline: Headline;
  headline_keys: Record<keyof Headline, string | null>;
}

export interface DeviceDetail {
  id: string;
  first_seen: string;
  last_seen: string;
  last_ts: string;
  last_seq: number;
  interval: number;
  online: boolean;
  attributes: Record<string, string>;
  counters: { received: number; duplicates: number; missing: number; rejected: number };
}

export interface SeriesData {
  metric: string;
  downsampled: boolean;
  count: number;
  bucket_ms?: number;
  points: number[][];
}

export async function allDevices(signal?: AbortSignal): Promise<DeviceSummary[]> {
  const out: DeviceSummary[] = [];
  let cursor: string | null = null;
  do {
    const page: { devices: DeviceSummary[]; next_cursor: string | null } = await api(
      `/api/v1/devices?limit=1000${cursor ? `&cursor=${cursor}` : ""}`,
      signal,
    );
    out.push(...page.devices);
    cursor = page.next_cursor;
  } while (cursor);
  return out;
}
