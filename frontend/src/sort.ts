import type { DeviceSummary } from "./api";
import type { SortKey } from "./url";

const SEVERITY_RANK = { critical: 3, warning: 2, info: 1 } as const;

function sortValue(d: DeviceSummary, key: SortKey): number | string {
  switch (key) {
    case "id":
      return d.id;
    case "status":
      return d.online ? 1 : 0;
    case "last_seen":
      return d.last_seen ? Date.parse(d.last_seen) : 0;
    case "alerts":
      return (d.alert_severity ? SEVERITY_RANK[d.alert_severity] : 0) * 1e6 + d.alerts;
    default:
      return d.headlines.find((h) => `h:${h.label}` === key)?.value ?? -1;
  }
}

export function sortDevices(devices: DeviceSummary[], key: SortKey, desc: boolean): DeviceSummary[] {
  const sign = desc ? -1 : 1;
  return [...devices].sort((a, b) => {
    const x = sortValue(a, key);
    const y = sortValue(b, key);
    const order = typeof x === "string" ? x.localeCompare(y as string) : x - (y as number);
    return sign * order || a.id.localeCompare(b.id);
  });
}
