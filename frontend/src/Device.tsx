import { useEffect, useState } from "react";
import { api, ApiError, type DeviceDetail, type SeriesData } from "./api";
import { Chart } from "./Chart";
import { formatAgo, formatValue, groupByPlugin } from "./format";
import { MetricPicker } from "./MetricPicker";
import { pluginStates } from "./plugins";
import { buildDeviceUrl, navigate, PRESETS, rangeParams, type DeviceView } from "./url";

const LIVE_MS = 5_000;

function useApi<T>(path: string | null, refreshMs: number | null): { data: T | null; error: string | null } {
  const [state, setState] = useState<{ data: T | null; error: string | null }>({ data: null, error: null });
  useEffect(() => {
    if (path === null) {
      setState({ data: null, error: null });
      return;
    }
    const ctrl = new AbortController();
    const load = () =>
      api<T>(path, ctrl.signal)
        .then((data) => setState({ data, error: null }))
        .catch((e: Error) => {
          if (e.name !== "AbortError") setState((old) => ({ data: old.data, error: e instanceof ApiError ? e.message : String(e) }));
        });
    load();
    const timer = refreshMs ? window.setInterval(load, refreshMs) : undefined;
    return () => {
      ctrl.abort();
      if (timer) window.clearInterval(timer);
    };
  }, [path, refreshMs]);
  return state;
}

export function Device({ view }: { view: DeviceView }) {
  const id = encodeURIComponent(view.device);
  const live = view.live && "preset" in view.range;
  const refresh = live ? LIVE_MS : null;
  const detail = useApi<DeviceDetail>(`/api/v1/devices/${id}`, refresh);
  const latest = useApi<{ metrics: Record<string, number>; ts: string }>(`/api/v1/devices/${id}/latest`, refresh);
  const { from, to } = rangeParams(view.range);
  const seriesPath = view.metrics.length
    ? `/api/v1/devices/${id}/series?${view.metrics.map((m) => `metric=${encodeURIComponent(m)}`).join("&")}` +
      `&from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}&points=600`
    : null;
  const series = useApi<{ series: SeriesData[] }>(seriesPath, refresh);
  const set = (change: Partial<DeviceView>) => navigate(buildDeviceUrl({ ...view, ...change }), true);
  const [custom, setCustom] = useState({ from: "", to: "" });

  if (detail.error && !detail.data) return <p className="error" role="alert">Cannot load {view.device}: {detail.error}</p>;
  if (!detail.data) return <p className="muted">Loading {view.device}…</p>;
  const d = detail.data;
  const attrs = d.attributes;
  const plugins = pluginStates(attrs);
  const broken = plugins.filter((p) => p.status === "failed" || p.status === "unavailable");
  const gpus = Object.entries(attrs).filter(([k]) => /^gpu-\d+-name$/.test(k)).map(([, v]) => v);
  const metricKeys = latest.data ? Object.keys(latest.data.metrics).sort() : [];
  return (
    <div className="device">
      <p>
        <a href="/" onClick={(e) => (e.preventDefault(), navigate("/"))}>
          ‹ fleet
        </a>
      </p>
      <h2>
        <span className={d.online ? "dot online" : "dot offline"} /> {d.id}{" "}
        <small className="muted">
          {d.online ? "online" : "offline"}, last seen {formatAgo(d.last_seen)}, every {d.interval} s
        </small>
      </h2>
      <dl className="attrs">
        <dt>host</dt>
        <dd>{attrs["system-hostname"] ?? "–"}</dd>
        <dt>agent</dt>
        <dd>{attrs["system-agent_version"] ?? "–"}</dd>
        <dt>OS</dt>
        <dd>{attrs["system-os"] ?? "–"}</dd>
        <dt>plugins</dt>
        <dd>
          {plugins
            .filter((p) => p.status === "loaded")
            .map((p) => `${p.name} ${p.version}`)
            .join(", ") || "–"}
        </dd>
        <dt>GPUs</dt>
        <dd>{gpus.join(", ") || "none"}</dd>
        <dt>payloads</dt>
        <dd>
          {d.counters.received} received, {d.counters.duplicates} duplicates, {d.counters.missing} missing,{" "}
          {d.counters.rejected} rejected
        </dd>
      </dl>
      {broken.length > 0 && (
        <section className="plugin-problems" aria-label="plugin problems">
          <h3>Plugins not working</h3>
          <ul>
            {broken.map((p) => (
              <li key={p.name} className={p.status}>
                <strong>{p.name}</strong> {p.version} <span className="badge">{p.status}</span>
                {p.reason && <> — {p.reason}</>}
              </li>
            ))}
          </ul>
        </section>
      )}

      <section>
        <h3>Time series</h3>
        <div className="toolbar">
          {PRESETS.map((p) => (
            <button
              key={p}
              className={"preset" in view.range && view.range.preset === p ? "active" : ""}
              onClick={() => set({ range: { preset: p } })}
            >
              {p}
            </button>
          ))}
          <input aria-label="from" placeholder="from (ISO 8601)" value={custom.from} onChange={(e) => setCustom({ ...custom, from: e.target.value })} />
          <input aria-label="to" placeholder="to" value={custom.to} onChange={(e) => setCustom({ ...custom, to: e.target.value })} />
          <button disabled={!custom.from || !custom.to} onClick={() => set({ range: { from: custom.from, to: custom.to } })}>
            apply
          </button>
          <button onClick={() => set({ live: !view.live })} disabled={!("preset" in view.range)}>
            {live ? "pause" : "resume"} live
          </button>
        </div>
        <MetricPicker available={metricKeys} selected={view.metrics} onChange={(metrics) => set({ metrics })} />
        {series.error && <p className="error" role="alert">{series.error}</p>}
        {view.metrics.length === 0 && <p className="muted">Pick one or more metrics to chart.</p>}
        {series.data && view.metrics.length > 0 && <Chart series={series.data.series} />}
        {series.data?.series.some((s) => s.downsampled) && (
          <p className="muted">Downsampled: the line is each bucket's average, the band its min and max.</p>
        )}
      </section>

      <section>
        <h3>Latest snapshot {latest.data && <small className="muted">at {latest.data.ts}</small>}</h3>
        {latest.error && <p className="error">{latest.error}</p>}
        <div className="groups">
          {latest.data &&
            groupByPlugin(latest.data.metrics).map(([plugin, rows]) => (
              <table key={plugin} className="snapshot" data-plugin={plugin}>
                <caption>{plugin}</caption>
                <tbody>
                  {rows.map(([label, key, value]) => (
                    <tr key={key} data-key={key}>
                      <td>{label}</td>
                      <td className="num">{formatValue(key, value)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            ))}
        </div>
      </section>
    </div>
  );
}
