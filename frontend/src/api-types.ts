// Generated from the API's OpenAPI document by scripts/gen_api_types.py: do not edit.
// A test fails when this file and the document disagree.

export type DeviceSummary = {
  id: string;
  /** UTC, ISO 8601 with Z */
  first_seen: string | null;
  /** UTC, ISO 8601 with Z */
  last_seen: string | null;
  /** UTC, ISO 8601 with Z */
  last_ts: string | null;
  interval: number;
  online: boolean;
  metrics: number;
  /** firing alerts (the device's and the server's about it) */
  alerts: number;
  /** the worst firing */
  alert_severity: "critical" | "warning" | "info" | null;
  /** the overview's columns for this device, as its plugins declared them */
  headlines: Headline[];
  /** its applied configuration is not the desired one */
  config_drift: boolean;
  /** the device's tags ([agent] tags), as it last sent them */
  tags: Record<string, string>;
};

export type Headline = {
  /** the column label the plugin declared (CPU, Disk, ...) */
  label: string;
  /** the metric key behind the value (the fullest disk) */
  key: string | null;
  /** the largest latest value of the matching keys */
  value: number | null;
  /** the unit the device declared (null: none declared; a client may guess from the key) */
  unit: "%" | "B" | "B/s" | "s" | "ms" | "Hz" | "MHz" | "°C" | "W" | "count" | "count/s" | "epoch_s" | "bool" | null;
};

export type Device = {
  id: string;
  /** UTC, ISO 8601 with Z */
  first_seen: string | null;
  /** UTC, ISO 8601 with Z */
  last_seen: string | null;
  /** UTC, ISO 8601 with Z */
  last_ts: string | null;
  last_seq: number;
  interval: number;
  online: boolean;
  attributes: Record<string, string>;
  /** the device's tags ([agent] tags), as it last sent them */
  tags: Record<string, string>;
  counters: {
    received: number;
    duplicates: number;
    missing: number;
    rejected: number;
  };
  config: DeviceConfig;
};

export type Metric = {
  key: string;
  value: number | null;
  /** UTC, ISO 8601 with Z */
  ts: string | null;
  /** the unit the device declared (null: none declared; a client may guess from the key) */
  unit: "%" | "B" | "B/s" | "s" | "ms" | "Hz" | "MHz" | "°C" | "W" | "count" | "count/s" | "epoch_s" | "bool" | null;
  /** gauge: a level; counter: only grows */
  kind: "gauge" | "counter";
  description: string | null;
};

export type Series = {
  metric: string;
  downsampled: boolean;
  count: number;
  bucket_ms?: number;
  /** [ts_ms, value] raw, or [bucket_start_ms, min, max, avg] when downsampled */
  points: ((number | null)[])[];
};

export type Reject = {
  id: number;
  /** UTC, ISO 8601 with Z */
  received: string | null;
  device: string | null;
  topic: string;
  reason: string;
  size: number;
  /** the first KiB, decoded as UTF-8 with replacement */
  payload: string;
};

export type Alert = {
  device_id: string;
  /** identifies (rule, key) of a device */
  fingerprint: string;
  rule: string;
  /** the metric key (or the rule's own key) it is about */
  key: string;
  severity: "critical" | "warning" | "info";
  state: "pending" | "firing" | "resolved";
  /** when the condition first held (device time for device alerts) */
  since: string | null;
  /** the last transition (firing, escalation, resolved) */
  changed: string | null;
  value: number | null;
  message: string;
  /** the device's own rule, or the server's */
  source: "device" | "server";
  /** the device is silent: its own alerts may be out of date */
  stale: boolean;
};

export type AlertEvent = {
  id: number;
  rule: string;
  key: string;
  severity: "critical" | "warning" | "info";
  /** an escalation is 'firing' with the new severity */
  state: "firing" | "resolved";
  /** when it happened (the device's clock for device alerts) */
  at: string | null;
  value: number | null;
  message: string;
};

export type DeviceConfig = {
  /** the version it should have (null: none) */
  desired_version: number | null;
  /** the version it last reported applied */
  applied_version: number | null;
  /** what it did with the version it last reported on */
  status: "applied" | "rejected" | "rolled_back" | "expired" | null;
  /** why, when it rejected or rolled back */
  error: string | null;
  /** UTC, ISO 8601 with Z */
  reported_at: string | null;
  /** applied_version is not desired_version */
  drift: boolean;
};

export type Rollout = {
  id: number;
  scope: "fleet" | "group" | "device" | "override";
  /** the group or device (empty for the fleet) */
  name: string;
  /** the device ids it reaches (a glob) */
  match: string;
  state: "canary" | "complete" | "aborted";
  reason: string;
  /** the devices that got it first */
  canary: string[];
  /** the layer, in the agent's TOML vocabulary */
  document: Record<string, unknown>;
  /** UTC, ISO 8601 with Z */
  expires_at: string | null;
  /** UTC, ISO 8601 with Z */
  created: string | null;
  /** UTC, ISO 8601 with Z */
  updated: string | null;
};

export type Error = {
  error: string;
};

/** GET /api/v1/devices */
export type ListDevicesResponse = {
  devices: DeviceSummary[];
  next_cursor: string | null;
};

/** GET /api/v1/devices/{device} */
export type GetDeviceResponse = Device;

/** GET /api/v1/devices/{device}/metrics */
export type ListMetricsResponse = {
  device: string;
  metrics: Metric[];
};

/** GET /api/v1/devices/{device}/latest */
export type GetLatestResponse = {
  device: string;
  /** UTC, ISO 8601 with Z */
  ts: string | null;
  attributes: Record<string, unknown>;
  metrics: Record<string, unknown>;
};

/** GET /api/v1/devices/{device}/series */
export type GetSeriesResponse = {
  device: string;
  /** UTC, ISO 8601 with Z */
  from: string | null;
  /** UTC, ISO 8601 with Z */
  to: string | null;
  fn?: "rate";
  series: Series[];
};

/** GET /api/v1/alerts */
export type ListAlertsResponse = {
  alerts: Alert[];
  truncated: boolean;
};

/** GET /api/v1/devices/{device}/alerts */
export type GetDeviceAlertsResponse = {
  device: string;
  current: Alert[];
  history: AlertEvent[];
  next_cursor: string | null;
};

/** GET /api/v1/silences */
export type ListSilencesResponse = {
  silences: ({
    id: number;
    matchers: Record<string, string>;
    /** UTC, ISO 8601 with Z */
    starts: string | null;
    /** UTC, ISO 8601 with Z */
    ends: string | null;
    comment: string;
  })[];
};

/** GET /api/v1/query */
export type QueryFleetResponse = {
  metric: string;
  agg: "max" | "min" | "avg" | "sum";
  /** null: latest values */
  window: {
    /** UTC, ISO 8601 with Z */
    from?: string | null;
    /** UTC, ISO 8601 with Z */
    to?: string | null;
  } | null;
  /** devices with a value (before top) */
  devices: number;
  results: ({
    device: string;
    value: number;
    /** the key of a max or min */
    key: string | null;
    /** matching keys of the device */
    keys: number;
  })[];
};

/** GET /api/v1/config/rollouts */
export type ListRolloutsResponse = {
  rollouts: Rollout[];
};

/** GET /api/v1/rejects */
export type ListRejectsResponse = {
  rejects: Reject[];
  next_cursor: string | null;
};

/** GET /healthz */
export type GetHealthResponse = {
  status: "ok" | "error";
  database: Record<string, unknown>;
  collector: Record<string, unknown> | null;
  collectors: ({
    id: string;
    host: string;
    pid: number;
    /** UTC, ISO 8601 with Z */
    started: string | null;
    /** UTC, ISO 8601 with Z */
    updated: string | null;
    age_s: number;
    state: string | null;
    stats: Record<string, unknown>;
  })[];
};

/** GET /api/v1/overview */
export type GetOverviewResponse = {
  /** devices matching q */
  total: number;
  page: number;
  pages: number;
  limit: number;
  sort: string;
  desc: boolean;
  /** the headline columns */
  labels: string[];
  summary: {
    devices: number;
    online: number;
    offline: number;
    /** devices with a firing device_silent alert */
    silent: number;
    critical: number;
    warning: number;
    /** tag name -> value -> counts (the 20 values most in trouble) */
    by_tag: Record<string, Record<string, {
      devices: number;
      offline: number;
      /** devices whose worst firing alert is critical */
      critical: number;
    }>>;
  };
  devices: DeviceSummary[];
};

/** GET /api/v1/sparklines */
export type GetSparklinesResponse = {
  /** UTC, ISO 8601 with Z */
  from: string | null;
  /** UTC, ISO 8601 with Z */
  to: string | null;
  points: number;
  /** device -> key -> averages, oldest first (null: no sample in that step) */
  lines: Record<string, Record<string, (number | null)[]>>;
};
