// The dashboard's state lives in the URL, so that a view can be shared as a link.

export const PRESETS = ["15m", "1h", "24h", "7d"] as const;
export type Preset = (typeof PRESETS)[number];
export type Range = { preset: Preset } | { from: string; to: string };

export interface DeviceView {
  device: string;
  metrics: string[];
  range: Range;
  live: boolean;
}

export const SORT_KEYS = ["id", "status", "last_seen", "alerts"] as const;
/** A fixed column, or `h:<label>`: a headline column (its label as the plugins declared it). */
export type SortKey = (typeof SORT_KEYS)[number] | `h:${string}`;

export interface OverviewView {
  q: string;
  sort: SortKey;
  desc: boolean;
  page: number;
}

export function parseDeviceView(pathname: string, search: string): DeviceView | null {
  const match = /^\/devices\/([^/]+)\/?$/.exec(pathname);
  if (!match) return null;
  const params = new URLSearchParams(search);
  const metrics = params.getAll("m").filter((m) => m.length > 0);
  const from = params.get("from");
  const to = params.get("to");
  const preset = params.get("range");
  let range: Range = { preset: "1h" };
  if (from && to) range = { from, to };
  else if (preset && (PRESETS as readonly string[]).includes(preset)) range = { preset: preset as Preset };
  return { device: decodeURIComponent(match[1]), metrics: [...new Set(metrics)], range, live: params.get("live") !== "0" };
}

export function buildDeviceUrl(view: DeviceView): string {
  const params = new URLSearchParams();
  for (const m of view.metrics) params.append("m", m);
  if ("preset" in view.range) params.set("range", view.range.preset);
  else {
    params.set("from", view.range.from);
    params.set("to", view.range.to);
  }
  if (!view.live) params.set("live", "0");
  const query = params.toString();
  return `/devices/${encodeURIComponent(view.device)}${query ? `?${query}` : ""}`;
}

export function parseOverview(search: string): OverviewView {
  const params = new URLSearchParams(search);
  const sortRaw = params.get("sort") ?? "id";
  const desc = sortRaw.startsWith("-");
  const key = sortRaw.replace(/^-/, "");
  const sort = (SORT_KEYS as readonly string[]).includes(key) || /^h:.{1,24}$/.test(key) ? (key as SortKey) : "id";
  const page = Math.max(1, Number.parseInt(params.get("page") ?? "1", 10) || 1);
  return { q: params.get("q") ?? "", sort, desc, page };
}

export function buildOverviewUrl(view: OverviewView): string {
  const params = new URLSearchParams();
  if (view.q) params.set("q", view.q);
  if (view.sort !== "id" || view.desc) params.set("sort", `${view.desc ? "-" : ""}${view.sort}`);
  if (view.page > 1) params.set("page", String(view.page));
  const query = params.toString();
  return `/${query ? `?${query}` : ""}`;
}

/** The API's from/to for a range: presets are relative to now on the server. */
export function rangeParams(range: Range): { from: string; to: string } {
  if ("preset" in range) return { from: `-${range.preset}`, to: "now" };
  return range;
}

export function navigate(url: string, replace = false): void {
  if (replace) window.history.replaceState(null, "", url);
  else window.history.pushState(null, "", url);
  window.dispatchEvent(new PopStateEvent("popstate"));
}

interface Click {
  button: number;
  metaKey: boolean;
  ctrlKey: boolean;
  shiftKey: boolean;
  altKey: boolean;
  preventDefault(): void;
}

/** The onClick of an in-app link: a plain click navigates here; Ctrl/Cmd/Shift/middle-click are the browser's (new tab, window). */
export function follow(url: string): (e: Click) => void {
  return (e) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(url);
  };
}
