// Alert periods for the charts, and the fleet's alert summary: pure functions over the API's data.
import type { Alert, AlertEvent } from "./api-types";

export interface Period {
  key: string;
  rule: string;
  severity: AlertEvent["severity"];
  /** Epoch ms. */
  from: number;
  /** Epoch ms; null while still firing. */
  to: number | null;
}

/**
 * The periods each alert fired, from a device's history (newest first, as the API gives it) and its
 * current alerts: a `firing` event opens a period (an escalation keeps it open at the new severity),
 * `resolved` closes it; one still firing runs to now.
 */
export function alertPeriods(history: AlertEvent[], current: Alert[]): Period[] {
  const open = new Map<string, Period>();
  const out: Period[] = [];
  for (const e of [...history].reverse()) {
    const id = `${e.rule}\u0000${e.key}`;
    const at = Date.parse(e.at ?? "");
    if (Number.isNaN(at)) continue;
    const period = open.get(id);
    if (e.state === "firing") {
      if (period) period.severity = worse(period.severity, e.severity);
      else open.set(id, { key: e.key, rule: e.rule, severity: e.severity, from: at, to: null });
    } else if (period) {
      period.to = at;
      out.push(period);
      open.delete(id);
    }
  }
  for (const a of current) {
    const id = `${a.rule}\u0000${a.key}`;
    if (a.state === "firing" && !open.has(id)) {
      const since = Date.parse(a.changed ?? a.since ?? "");
      if (!Number.isNaN(since)) open.set(id, { key: a.key, rule: a.rule, severity: a.severity, from: since, to: null });
    }
  }
  return [...out, ...open.values()].sort((a, b) => a.from - b.from);
}

const RANK = { info: 1, warning: 2, critical: 3 } as const;

export function worse(a: AlertEvent["severity"], b: AlertEvent["severity"]): AlertEvent["severity"] {
  return RANK[a] >= RANK[b] ? a : b;
}

export interface SilenceLike {
  id: number;
  matchers: Record<string, string>;
  ends: string | null;
  comment: string;
}

/** A shell glob (`*`, `?`) as a whole-string regular expression. */
function glob(pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${body}$`);
}

/** The silence that mutes an alert, if any (every matcher's glob matches the alert's field). */
export function silencing(alert: Pick<Alert, "device_id" | "rule" | "severity" | "key">, silences: SilenceLike[]): SilenceLike | null {
  const fields: Record<string, string> = { device: alert.device_id, rule: alert.rule, severity: alert.severity, key: alert.key };
  return silences.find((s) => Object.entries(s.matchers).every(([name, pattern]) => glob(pattern).test(fields[name] ?? ""))) ?? null;
}
