import { useMemo, useState, useEffect } from "react";
import { allDevices, api, type DeviceSummary, type Headline, type SeriesData } from "./api";
import type { ListAlertsResponse } from "./api-types";
import { summarize } from "./alerts";
import { Sparkline } from "./Chart";
import { formatAgo, formatUnit } from "./format";
import { matchesSearch } from "./search";
import { sortDevices } from "./sort";
import { usePoll } from "./usePoll";
import { buildDeviceUrl, buildOverviewUrl, follow, navigate, type OverviewView, type SortKey } from "./url";

const PAGE = 50;
const REFRESH_MS = 10_000;

/** The headline columns: every label the devices' plugins declared, in order of first appearance. */
export function headlineLabels(devices: DeviceSummary[]): string[] {
  const labels: string[] = [];
  for (const d of devices) for (const h of d.headlines) if (!labels.includes(h.label)) labels.push(h.label);
  return labels;
}

/** 15-minute sparklines of each visible device's headline metrics: one request per device. */
function useSparklines(rows: DeviceSummary[]): Record<string, Record<string, number[]>> {
  const [lines, setLines] = useState<Record<string, Record<string, number[]>>>({});
  const key = rows.map((d) => d.id).join(",");
  useEffect(() => {
    const ctrl = new AbortController();
    for (const d of rows) {
      const keys = d.headlines.map((h) => h.key).filter((k): k is string => k !== null);
      if (keys.length === 0) continue;
      const query = keys.map((k) => `metric=${encodeURIComponent(k)}`).join("&");
      api<{ series: SeriesData[] }>(`/api/v1/devices/${encodeURIComponent(d.id)}/series?${query}&from=-15m&points=30`, ctrl.signal)
        .then((body) => {
          const byKey: Record<string, number[]> = {};
          for (const s of body.series) byKey[s.metric] = s.points.map((p) => p[p.length === 4 ? 3 : 1] ?? NaN).filter((v) => !Number.isNaN(v));
          setLines((old) => ({ ...old, [d.id]: byKey }));
        })
        .catch(() => undefined); // no sparkline is not worth an error banner
    }
    return () => ctrl.abort();
  }, [key]); // eslint-disable-line react-hooks/exhaustive-deps
  return lines;
}

export function Overview({ view }: { view: OverviewView }) {
  const fleet = usePoll("fleet", allDevices, REFRESH_MS);
  const firing = usePoll("alerts", (signal) => api<ListAlertsResponse>("/api/v1/alerts?state=firing", signal), REFRESH_MS);
  const summary = summarize(firing.data?.alerts ?? []);
  const devices = fleet.data;
  const shown = useMemo(() => {
    const q = view.q.toLowerCase();
    const matching = (devices ?? []).filter((d) => matchesSearch(d, q));
    return sortDevices(matching, view.sort, view.desc);
  }, [devices, view.q, view.sort, view.desc]);
  const labels = useMemo(() => headlineLabels(devices ?? []), [devices]);
  const pages = Math.max(1, Math.ceil(shown.length / PAGE));
  const page = Math.min(view.page, pages);
  const rows = shown.slice((page - 1) * PAGE, page * PAGE);
  const sparks = useSparklines(rows);
  const cell = (d: DeviceSummary, label: string) => {
    const h: Headline | undefined = d.headlines.find((x) => x.label === label);
    const key = h?.key ?? null;
    return (
      <td className="headline" title={key ?? undefined} key={label} data-headline={label}>
        <span className="num">{formatUnit(h?.unit ?? null, h?.value)}</span>
        <Sparkline values={(key && sparks[d.id]?.[key]) || []} />
      </td>
    );
  };
  const go = (change: Partial<OverviewView>) => navigate(buildOverviewUrl({ ...view, page: 1, ...change }), true);
  const header = (key: SortKey, label: string) => (
    <th key={key}>
      <button className="sort" onClick={() => go({ sort: key, desc: view.sort === key ? !view.desc : false })}>
        {label} {view.sort === key ? (view.desc ? "▼" : "▲") : ""}
      </button>
    </th>
  );

  if (fleet.error && !devices) return <p className="error" role="alert">Cannot load the fleet: {fleet.error}</p>;
  if (devices === null) return <p className="muted">Loading the fleet…</p>;
  if (devices.length === 0)
    return (
      <div className="empty">
        <h2>No devices yet</h2>
        <p>
          Start an agent with <code>edgemon-agent run</code>, its <code>EDGEMON_MQTT_*</code> settings pointing at this
          server's broker (see the README). Devices appear here with their first payload.
        </p>
      </div>
    );
  const offline = devices.filter((d) => !d.online).length;
  const drifting = devices.filter((d) => d.config_drift).length;
  const now = fleet.at || Date.now();
  return (
    <div>
      {fleet.error && <p className="error" role="alert">Refresh failed: {fleet.error}</p>}
      <div className="toolbar">
        <input
          type="search"
          placeholder="search devices by id or tag (site=berlin)…"
          value={view.q}
          onChange={(e) => go({ q: e.target.value })}
          aria-label="search devices"
        />
        <span className="muted">
          {devices.length} devices, <span className={offline ? "offline" : ""}>{offline} offline</span>
        </span>
        <span className="summary" aria-label="fleet alerts">
          <span className={`badge critical${summary.critical ? "" : " zero"}`}>{summary.critical} critical</span>{" "}
          <span className={`badge warning${summary.warning ? "" : " zero"}`}>{summary.warning} warning</span>{" "}
          <span className={summary.silent ? "offline" : "muted"}>{summary.silent} silent</span>
        </span>
        <span className={drifting ? "drift" : "muted"} aria-label="configuration drift" title="devices not on their desired configuration version">
          {drifting} config drift
        </span>
      </div>
      <table className="fleet">
        <thead>
          <tr>
            {header("status", "status")}
            {header("id", "device")}
            {header("last_seen", "last seen")}
            {labels.map((label) => header(`h:${label}`, label))}
            {header("alerts", "alerts")}
          </tr>
        </thead>
        <tbody>
          {rows.map((d) => {
            const url = buildDeviceUrl({ device: d.id, metrics: [], range: { preset: "1h" }, live: true });
            return (
              <tr key={d.id} className={d.online ? "" : "offline-row"} data-device={d.id}>
                <td>
                  <span className={d.online ? "dot online" : "dot offline"} /> {d.online ? "online" : "offline"}
                </td>
                <td>
                  <a href={url} onClick={follow(url)}>
                    {d.id}
                  </a>
                </td>
                <td title={d.last_seen ?? undefined}>
                  {formatAgo(d.last_seen, now)}
                  {d.config_drift && (
                    <span className="badge drift" title="not on its desired configuration version">
                      {" "}
                      config drift
                    </span>
                  )}
                </td>
                {labels.map((label) => cell(d, label))}
                <td className="alert-cell" data-alerts={d.alerts}>
                  {d.alerts > 0 && d.alert_severity ? (
                    <span className={`badge ${d.alert_severity}`}>
                      {d.alerts} {d.alert_severity}
                    </span>
                  ) : (
                    <span className="muted">0</span>
                  )}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      {shown.length === 0 && <p className="muted">No device id or tag matches “{view.q}”.</p>}
      {pages > 1 && (
        <div className="pager">
          <button disabled={page <= 1} onClick={() => navigate(buildOverviewUrl({ ...view, page: page - 1 }))}>
            ‹ previous
          </button>
          <span>
            page {page} of {pages}
          </span>
          <button disabled={page >= pages} onClick={() => navigate(buildOverviewUrl({ ...view, page: page + 1 }))}>
            next ›
          </button>
        </div>
      )}
    </div>
  );
}
