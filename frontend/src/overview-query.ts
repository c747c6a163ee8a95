import type { OverviewView } from "./url";

export const PAGE = 50;

/** The server's overview request for a view: search, sort and page are the server's work. */
export function overviewPath(view: OverviewView, limit = PAGE): string {
  const params = new URLSearchParams({ sort: view.sort, desc: view.desc ? "1" : "0", page: String(view.page), limit: String(limit) });
  if (view.q) params.set("q", view.q);
  return `/api/v1/overview?${params}`;
}

/** One request for the sparklines of a page of devices. */
export function sparklinesPath(devices: string[], points = 30): string {
  const params = new URLSearchParams();
  for (const d of devices) params.append("device", d);
  params.set("points", String(points));
  return `/api/v1/sparklines?${params}`;
}

/** A line without its gaps (a step with no sample is null): what a sparkline draws. */
export function present(values: (number | null)[] | undefined): number[] {
  return (values ?? []).filter((v): v is number => v !== null && Number.isFinite(v));
}
