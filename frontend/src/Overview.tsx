import { useEffect, useMemo, useState } from "react";
import { allDevices, api, ApiError, type DeviceSummary, type SeriesData } from "./api";
import { Sparkline } from "./Chart";
import { formatAgo, formatValue } from "./format";
import { sortDevices } from "./sort";
import { buildDeviceUrl, buildOverviewUrl, navigate, type OverviewView, type SortKey } from "./url";

const PAGE = 50;
const REFRESH_MS = 10_000;

const HEADLINES = ["cpu", "memory", "disk", "gpu"] as const;

/** 15-minute sparklines of each visible device's headline metrics: one request per device. */
function useSparklines(rows: DeviceSummary[]): Record<string, Record<string, number[]>> {
  const [lines, setLines] = useState<Record<string, Record<string, number[]>>>({});
  const key = rows.map((d) => d.id).join(",");
  useEffect(() => {
    const ctrl = new AbortController();
    for (const d of rows) {
      const keys = HEADLINES.map((h) => d.headline_keys[h]).filter((k): k is string => k !== null);
      if (keys.length === 0) continue;
      const query = keys.map((k) => `metric=${encodeURIComponent(k)}`).join("&");
      api<{ series: SeriesData[] }>(`/api/v1/devices/${encodeURIComponent(d.id)}/series?${query}&from=-15m&points=30`, ctrl.signal)
        .then((body) => {
          const byKey: Record<string, number[]> = {};
          for (const s of body.series) byKey[s.metric] = s.points.map((p) => p[p.length === 4 ? 3 : 1]);
          setLines((old) => ({ ...old, [d.id]: byKey }));
        })
        .catch(() => undefined); // no sparkline is not worth an error banner
    }
    return () => ctrl.abort();
  }, [key]); // eslint-disable-line react-hooks/exhaustive-deps
  return lines;
}

export function Overview({ view }: { view: OverviewView }) {
  const [devices, setDevices] = useState<DeviceSummary[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const ctrl = new AbortController();
    const load = () =>
      allDevices(ctrl.signal)
        .then((d) => {
          setDevices(d);
          setError(null);
          setNow(Date.now());
        })
        .catch((e: Error) => {
          if (e.name !== "AbortError") setError(e instanceof ApiError ? e.message : String(e));
        });
    load();
    const timer = window.setInterval(load, REFRESH_MS);
    return () => {
      ctrl.abort();
      window.clearInterval(timer);
    };
  }, []);
  const shown = useMemo(() => {
    const q = view.q.toLowerCase();
    const matching = (devices ?? []).filter((d) => d.id.toLowerCase().includes(q));
    return sortDevices(matching, view.sort, view.desc);
  }, [devices, view.q, view.sort, view.desc]);
  const pages = Math.max(1, Math.ceil(shown.length / PAGE));
  const page = Math.min(view.page, pages);
  const rows = shown.slice((page - 1) * PAGE, page * PAGE);
  const sparks = useSparklines(rows);
  const cell = (d: DeviceSummary, h: (typeof HEADLINES)[number]) => {
    const key = d.headline_keys[h];
    return (
      <td className="headline" title={key ?? undefined}>
        <span className="num">{formatValue(`${h}-percent`, d.headline[h])}</span>
        <Sparkline values={(key && sparks[d.id]?.[key]) || []} />
      </td>
    );
  };
  const go = (change: Partial<OverviewView>) => navigate(buildOverviewUrl({ ...view, page: 1, ...change }), true);
  const header = (key: SortKey, label: string) => (
    <th>
      <button className="sort" onClick={() => go({ sort: key, desc: view.sort === key ? !view.desc : false })}>
        {label} {view.sort === key ? (view.desc ? "▼" : "▲") : ""}
      </button>
    </th>
  );

  if (error) return <p className="error" role="alert">Cannot load the fleet: {error}</p>;
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
  return (
    <div>
      <div className="toolbar">
        <input
          type="search"
          placeholder="search devices by id…"
          value={view.q}
          onChange={(e) => go({ q: e.target.value })}
          aria-label="search devices"
        />
        <span className="muted">
          {devices.length} devices, <span className={offline ? "offline" : ""}>{offline} offline</span>
        </span>
      </div>
      <table className="fleet">
        <thead>
          <tr>
            {header("status", "status")}
            {header("id", "device")}
            {header("last_seen", "last seen")}
            {header("cpu", "CPU")}
            {header("memory", "memory")}
            {header("disk", "fullest disk")}
            {header("gpu", "GPU")}
            <th>alerts</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((d) => (
            <tr key={d.id} className={d.online ? "" : "offline-row"} data-device={d.id}>
              <td>
                <span className={d.online ? "dot online" : "dot offline"} /> {d.online ? "online" : "offline"}
              </td>
              <td>
                <a
                  href={buildDeviceUrl({ device: d.id, metrics: [], range: { preset: "1h" }, live: true })}
                  onClick={(e) => {
                    e.preventDefault();
                    navigate(buildDeviceUrl({ device: d.id, metrics: [], range: { preset: "1h" }, live: true }));
                  }}
                >
                  {d.id}
                </a>
              </td>
              <td title={d.last_seen}>{formatAgo(d.last_seen, now)}</td>
              {cell(d, "cpu")}
              {cell(d, "memory")}
              {cell(d, "disk")}
              {cell(d, "gpu")}
              <td>{d.alerts}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {shown.length === 0 && <p className="muted">No device id contains “{view.q}”.</p>}
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
