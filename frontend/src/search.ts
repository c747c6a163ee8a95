import type { DeviceSummary } from "./api";

/** A device matches a search by its id, or by a tag written ``name=value`` (the value's start is enough). */
export function matchesSearch(d: DeviceSummary, q: string): boolean {
  if (d.id.toLowerCase().includes(q)) return true;
  const [name, value] = q.split("=", 2);
  if (value === undefined) return false;
  const tag = d.tags[name.trim()];
  return tag !== undefined && tag.toLowerCase().startsWith(value.trim());
}
