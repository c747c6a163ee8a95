import type { DeviceSummary, Headline } from "./api";
import type { GetOverviewResponse, GetSparklinesResponse } from "./api-types";
import { Sparkline } from "./Chart";
import { formatAgo, formatUnit } from "./format";
import { overviewPath, present, sparklinesPath } from "./overview-query";
import { useApi } from "./usePoll";
import { buildDeviceUrl, buildOverviewUrl, follow, navigate, type OverviewView, type SortKey } from "./url";

const REFRESH_MS = 10_000;

type Summary = GetOverviewResponse["summary"];

/** Online, offline, silent and alerting devices of the whole fleet, and per value of each tag. */
function SummaryBar({ summary, onTag }: { summary: Summary; onTag: (q: string) => void }) {
  const tags = Object.entries(summary.by_tag);
  return (
    <div className="summary-bar" aria-label="fleet summary">
      <span>
        <strong>{summary.devices}</strong> devices
      </span>
      <span className="online-count">{summary.online} online</span>
      <span className={summary.offline ? "offline" : "muted"}>{summary.offline} offline</span>
      <span className={summary.silent ? "offline" : "muted"}>{summary.silent} silent</span>
      <span className={`badge critical${summary.critical ? "" : " zero"}`}>{summary.critical} critical</span>
      <span className={`badge warning${summary.warning ? "" : " zero"}`}>{summary.warning} warning</span>
      {tags.map(([name, values]) => (
        <span className="tag-summary" key={name} data-tag={name}>
          {name}:{" "}
          {Object.entries(values).map(([value, c]) => (
            <button
              key={value}
              className={c.offline || c.critical ? "tag-chip trouble" : "tag-chip"}
              title={`${c.devices} devices, ${c.offline} offline, ${c.critical} critical`}
              onClick={() => onTag(`${name}=${value}`)}
            >
              {value} {c.devices}
              {c.offline ? ` (${c.offline} off)` : ""}
            </button>
          ))}
        </span>
      ))}
    </div>
  );
}

export function Overview({ view }: { view: OverviewView }) {
  const fleet = useApi<GetOverviewResponse>(overviewPath(view), REFRESH_MS);
  const body = fleet.data;
  const rows = body?.devices ?? [];
  const labels = body?.labels ?? [];
  const sparks = useApi<GetSparklinesResponse>(rows.length ? sparklinesPath(rows.map((d) => d.id)) : null, REFRESH_MS);
  const lines = sparks.data?.lines ?? {};
  const cell = (d: DeviceSummary, label: string) => {
    const h: Headline | undefined = d.headlines.find((x) => x.label === label);
    const key = h?.key ?? null;
    return (
      <td className="headline" title={key ?? undefined} key={label} data-headline={label}>
        <span className="num">{formatUnit(h?.unit ?? null, h?.value)}</span>
        <Sparkline values={key ? present(lines[d.id]?.[key]) : []} />
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

  if (fleet.error && !body) return <p className="error" role="alert">Cannot load the fleet: {fleet.error}</p>;
  if (body === null) return <p className="muted">Loading the fleet…</p>;
  if (body.summary.devices === 0)
    return (
      <div className="empty">
        <h2>No devices yet</h2>
        <p>
          Start an agent with <code>edgemon-agent run</code>, its <code>EDGEMON_MQTT_*</code> settings pointing at this
          server's broker (see the README). Devices appear here with their first payload.
        </p>
      </div>
    );
  const drifting = rows.filter((d) => d.config_drift).length;
  const now = fleet.at || Date.now();
  const { page, pages } = body;
  return (
    <div>
      {fleet.error && <p className="error" role="alert">Refresh failed: {fleet.error}</p>}
      <SummaryBar summary={body.summary} onTag={(q) => go({ q })} />
      <div className="toolbar">
        <input
          type="search"
          placeholder="search devices by id or tag (site=berlin)…"
          value={view.q}
          onChange={(e) => go({ q: e.target.value })}
          aria-label="search devices"
        />
        <span className="muted" data-total={body.total}>
          {body.total} matching
        </span>
        <span className={drifting ? "drift" : "muted"} aria-label="configuration drift" title="devices on this page not on their desired configuration version">
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
      {body.total === 0 && <p className="muted">No device id or tag matches “{view.q}”.</p>}
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
