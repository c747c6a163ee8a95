import { useState } from "react";
import type { DeviceDetail, Metric, SeriesData } from "./api";
import type { GetDeviceAlertsResponse, ListMetricsResponse, ListSilencesResponse } from "./api-types";
import { alertPeriods, silencing } from "./alerts";
import { Chart } from "./Chart";
import { defaultMetrics } from "./defaults";
import { formatAgo, formatValue, groupByPlugin, type Unit } from "./format";
import { MetricPicker } from "./MetricPicker";
import { pluginStates } from "./plugins";
import { useApi } from "./usePoll";
import { buildDeviceUrl, follow, navigate, PRESETS, rangeParams, type DeviceView } from "./url";

const LIVE_MS = 5_000;

/** Attributes worth a line of their own (the rest of the string values are in the snapshot tables). */
const SHOWN = ["system-hostname", "system-os", "system-arch", "system-agent_version", "system-python"];

export function Device({ view }: { view: DeviceView }) {
  const id = encodeURIComponent(view.device);
  const live = view.live && "preset" in view.range;
  const refresh = live ? LIVE_MS : null;
  const detail = useApi<DeviceDetail>(`/api/v1/devices/${id}`, refresh);
  const metrics = useApi<ListMetricsResponse>(`/api/v1/devices/${id}/metrics`, refresh);
  const alerts = useApi<GetDeviceAlertsResponse>(`/api/v1/devices/${id}/alerts?limit=200`, refresh);
  const silences = useApi<ListSilencesResponse>("/api/v1/silences", refresh);
  const { from, to } = rangeParams(view.range);
  // No metric in the URL: the default charts (CPU, memory, disks, GPUs), without changing the URL.
  const charted = view.metrics.length ? view.metrics : defaultMetrics((metrics.data?.metrics ?? []).map((m) => m.key));
  const seriesPath = charted.length
    ? `/api/v1/devices/${id}/series?${charted.map((m) => `metric=${encodeURIComponent(m)}`).join("&")}` +
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
  const described: Record<string, Metric> = Object.fromEntries((metrics.data?.metrics ?? []).map((m) => [m.key, m]));
  const units: Record<string, Unit | null> = Object.fromEntries(Object.values(described).map((m) => [m.key, m.unit]));
  const metricKeys = Object.keys(described).sort();
  const periods = alerts.data ? alertPeriods(alerts.data.history, alerts.data.current) : [];
  const current = alerts.data?.current ?? [];
  const newest = Object.values(described).reduce<string | null>((t, m) => (m.ts && (!t || m.ts > t) ? m.ts : t), null);
  return (
    <div className="device">
      <p>
        <a href="/" onClick={follow("/")}>
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
        {SHOWN.filter((k) => attrs[k] !== undefined).map((k) => (
          <div key={k} data-attribute={k}>
            <dt>{k.replace(/^system-/, "")}</dt>
            <dd>{attrs[k]}</dd>
          </div>
        ))}
        <dt>plugins</dt>
        <dd>
          {plugins
            .filter((p) => p.status === "loaded")
            .map((p) => `${p.name} ${p.version}`)
            .join(", ") || "–"}
        </dd>
        {Object.keys(d.tags).length > 0 && (
          <>
            <dt>tags</dt>
            <dd data-tags>
              {Object.entries(d.tags)
                .map(([k, v]) => `${k}=${v}`)
                .join(", ")}
            </dd>
          </>
        )}
        <dt>payloads</dt>
        <dd>
          {d.counters.received} received, {d.counters.duplicates} duplicates, {d.counters.missing} missing,{" "}
          {d.counters.rejected} rejected
        </dd>
        {d.config.desired_version !== null && (
          <>
            <dt>configuration</dt>
            <dd className={d.config.drift ? "drift" : ""} data-config-drift={d.config.drift}>
              {d.config.drift
                ? `drift: version ${d.config.applied_version ?? "none"} applied, ${d.config.desired_version} desired`
                : `version ${d.config.applied_version} applied`}
              {d.config.status && d.config.status !== "applied" && ` (${d.config.status.replace("_", " ")})`}
              {d.config.error && <> — {d.config.error}</>}
            </dd>
          </>
        )}
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

      <section className="alerts" aria-label="alerts">
        <h3>
          Alerts{" "}
          <small className="muted">
            {current.filter((a) => a.state === "firing").length} firing, {current.filter((a) => a.state === "pending").length} pending
          </small>
        </h3>
        {alerts.error && <p className="error">{alerts.error}</p>}
        {current.length > 0 && (
          <table className="alert-list current">
            <tbody>
              {current.map((a) => (
                <tr key={a.fingerprint} className={`${a.severity} ${a.state}`} data-rule={a.rule} data-key={a.key}>
                  <td>
                    <span className={`badge ${a.severity}`}>{a.severity}</span>
                  </td>
                  <td>{a.state}{a.stale ? " (stale: the device is silent)" : ""}</td>
                  <td>{a.rule}</td>
                  <td>
                    {described[a.key] ? (
                      <a href={buildDeviceUrl({ ...view, metrics: [a.key] })} onClick={follow(buildDeviceUrl({ ...view, metrics: [a.key] }))}>
                        {a.key}
                      </a>
                    ) : (
                      a.key
                    )}
                  </td>
                  <td title={a.since ?? undefined}>since {formatAgo(a.since)}</td>
                  <td>
                    {a.message}
                    {(() => {
                      const s = silencing(a, silences.data?.silences ?? []);
                      return s ? (
                        <span className="silenced" title={s.comment}>
                          {" "}
                          silenced until {s.ends} ({s.comment || "no comment"})
                        </span>
                      ) : null;
                    })()}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        {current.length === 0 && <p className="muted">No alert is pending or firing.</p>}
        {alerts.data && alerts.data.history.length > 0 && (
          <details>
            <summary>History ({alerts.data.history.length}{alerts.data.next_cursor ? "+" : ""})</summary>
            <table className="alert-list history">
              <tbody>
                {alerts.data.history.map((e) => (
                  <tr key={e.id} className={e.state} data-state={e.state}>
                    <td>{e.at}</td>
                    <td>
                      <span className={`badge ${e.severity}`}>{e.severity}</span>
                    </td>
                    <td>{e.state}</td>
                    <td>{e.rule}</td>
                    <td>{e.key}</td>
                    <td>{e.message}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </details>
        )}
      </section>

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
        {charted.length === 0 && <p className="muted">Pick one or more metrics to chart.</p>}
        {series.data && charted.length > 0 && (
          <Chart series={series.data.series} units={units} periods={periods.filter((p) => charted.includes(p.key))} />
        )}
        {series.data?.series.some((s) => s.downsampled) && (
          <p className="muted">Downsampled: the line is each bucket's average, the band its min and max.</p>
        )}
      </section>

      <section>
        <h3>Latest snapshot {newest && <small className="muted">at {newest}</small>}</h3>
        {metrics.error && <p className="error">{metrics.error}</p>}
        <div className="groups">
          {groupByPlugin(described).map(([plugin, rows]) => (
            <table key={plugin} className="snapshot" data-plugin={plugin}>
              <caption>{plugin}</caption>
              <tbody>
                {rows.map(([label, key, m]) => (
                  <tr key={key} data-key={key} title={m.description ?? undefined}>
                    <td>{label}</td>
                    <td className="num">{formatValue(key, m.value, m.unit)}</td>
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
