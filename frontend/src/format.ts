// Units and times for display. Keys are the server's flat keys ("disk-usage-sda-percent"); units are
// what the device declared for them (the API's `unit`), with a guess from the key's name as a fallback
// for plugins that declare none.

import type { Metric } from "./api";

export type Unit = NonNullable<Metric["unit"]>;

const BYTES = /(^|[-_])(bytes|total|used|free|available|buffers|cached|mem_used|mem_total|mem_free|rx_bytes|tx_bytes)$/;

/** The unit a key's name suggests, for a metric whose device declared none. */
export function guessUnit(key: string): Unit | null {
  const k = key.toLowerCase();
  if (k.endsWith("percent") || k.endsWith("utilization-gpu") || k.endsWith("utilization-memory") || k.endsWith("-util"))
    return "%";
  if (k.endsWith("temp_c") || k.endsWith("temperature") || k.includes("-temp")) return "°C";
  if (k.endsWith("power_w") || k.endsWith("_w")) return "W";
  if (k.endsWith("mhz")) return "MHz";
  if (k.endsWith("bytes_per_s")) return "B/s";
  if (k.endsWith("_per_s")) return "count/s";
  if (k.endsWith("_ms")) return "ms";
  if (k.endsWith("_s") || k.endsWith("uptime")) return "s";
  if (BYTES.test(k)) return "B";
  return null;
}

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = Math.abs(n);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const sign = n < 0 ? "-" : "";
  return `${sign}${unit === 0 ? value.toFixed(0) : value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

export function formatNumber(n: number): string {
  if (Number.isInteger(n)) return n.toLocaleString("en-US");
  const abs = Math.abs(n);
  return abs >= 100 ? n.toFixed(1) : abs >= 1 ? n.toFixed(2) : n.toPrecision(3);
}

/** A value in a unit of the protocol's vocabulary (null: a plain number). */
export function formatUnit(unit: Unit | null, value: number | null | undefined): string {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  switch (unit) {
    case "%":
      return `${value.toFixed(1)} %`;
    case "B":
      return formatBytes(value);
    case "B/s":
      return `${formatBytes(value)}/s`;
    case "°C":
      return `${value.toFixed(0)} °C`;
    case "W":
      return `${value.toFixed(1)} W`;
    case "count/s":
      return `${formatNumber(value)}/s`;
    case "epoch_s":
      return new Date(value * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
    case "bool":
      return value ? "yes" : "no";
    case "count":
    case null:
      return formatNumber(value);
    default:
      return `${formatNumber(value)} ${unit}`;
  }
}

/** A value with its unit: the declared one (`unit`), else the one its key implies. */
export function formatValue(key: string, value: number | null | undefined, unit?: Unit | null): string {
  return formatUnit(unit ?? guessUnit(key), value);
}

/** "12 s ago", "5 min ago", "3 h ago", "2 d ago"; "never" for null. */
export function formatAgo(iso: string | null, nowMs: number = Date.now()): string {
  if (!iso) return "never";
  const seconds = Math.max(0, Math.round((nowMs - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

/** Flat metrics grouped by plugin (the first key segment), keys sorted, the plugin prefix dropped. */
export function groupByPlugin<T>(flat: Record<string, T>): [string, [string, string, T][]][] {
  const groups = new Map<string, [string, string, T][]>();
  for (const [key, value] of Object.entries(flat)) {
    const cut = key.indexOf("-");
    const plugin = cut < 0 ? key : key.slice(0, cut);
    const rest = cut < 0 ? "" : key.slice(cut + 1);
    if (!groups.has(plugin)) groups.set(plugin, []);
    groups.get(plugin)!.push([rest || plugin, key, value]);
  }
  const order = ["cpu", "memory", "disk", "gpu", "net", "system", "agent"];
  const rank = (p: string) => (order.indexOf(p) < 0 ? order.length : order.indexOf(p));
  return [...groups.entries()]
    .sort(([a], [b]) => rank(a) - rank(b) || a.localeCompare(b))
    .map(([plugin, rows]) => [plugin, rows.sort((x, y) => x[0].localeCompare(y[0]))]);
}
