/** Plugin states as the agent reports them: attributes `agent-plugin-<name>-{status,version,reason}`. */
export interface PluginState {
  name: string;
  status: string;
  version: string;
  reason?: string;
}

const PREFIX = "agent-plugin-";
const FIELDS = ["status", "version", "reason"] as const;

/** Every plugin the device reports, problems first (failed, unavailable, disabled), then by name. */
export function pluginStates(attrs: Record<string, string>): PluginState[] {
  const byName = new Map<string, Partial<PluginState>>();
  for (const [key, value] of Object.entries(attrs)) {
    if (!key.startsWith(PREFIX)) continue;
    const rest = key.slice(PREFIX.length);
    const field = FIELDS.find((f) => rest.endsWith(`-${f}`));
    if (!field) continue;
    const name = rest.slice(0, -(field.length + 1));
    byName.set(name, { ...byName.get(name), name, [field]: value });
  }
  const rank: Record<string, number> = { failed: 0, unavailable: 1, disabled: 2, loaded: 3 };
  return [...byName.values()]
    .filter((p): p is PluginState => typeof p.status === "string")
    .map((p) => ({
      name: p.name!,
      status: p.status!,
      version: p.version ?? "?",
      // A reason is stale once the plugin loads again (attributes keep their last value).
      ...(p.status !== "loaded" && p.reason ? { reason: p.reason } : {}),
    }))
    .sort((a, b) => (rank[a.status] ?? 9) - (rank[b.status] ?? 9) || a.name.localeCompare(b.name));
}
