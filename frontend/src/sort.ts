import type { DeviceSummary } from "./api";
import type { SortKey } from "./url";

function sortValue(d: DeviceSummary, key: SortKey): number | string {
  switch (key) {
    case "id":
      return d.id;
    case "status":
      return d.online ? 1 : 0;
    case "last_seen":
      return d.last_seen ? Date.parse(d.last_seen) : 0;
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
