// End-to-end check of the dashboard in real headless Chromium (Debian's, driven by playwright-core).
// Env: BASE_URL, DEVICE (to find), METRICS (two keys, comma-separated), POINTS (expected chart points),
// VALUES (JSON {key: "expected text"} for the snapshot), SHOTS (directory for screenshots), CHROMIUM,
// PLUGIN_PROBLEM (text the device page's "Plugins not working" section must show), AGENT_DEVICE (a real
// agent's device), HEADLINE (JSON {label, value}: a headline column a third-party plugin declared and the agent's
// value in it), AGENT_METRICS (two keys of different units), AGENT_AXES (the chart's axis labels for them).
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const env = process.env;
const base = env.BASE_URL;
const device = env.DEVICE;
const metrics = env.METRICS.split(",");
const shots = env.SHOTS ?? "var/screenshots";
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const failures = [];
const check = (ok, what) => {
  if (!ok) failures.push(what);
};
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  page.on("pageerror", (err) => errors.push(String(err)));
  await page.goto(base + "/", { waitUntil: "networkidle" });
  await page.waitForSelector("table.fleet tbody tr");
  const rows = await page.locator("table.fleet tbody tr").count();
  check(rows >= 2, `overview lists the fleet (${rows} rows)`);
  if (env.OFFLINE) {
    const cls = await page.getAttribute(`tr[data-device="${env.OFFLINE}"]`, "class");
    check(cls === "offline-row", `${env.OFFLINE} is marked offline (class ${cls})`);
    const status = await page.locator(`tr[data-device="${env.OFFLINE}"] td`).first().textContent();
    check(status?.trim() === "offline", `${env.OFFLINE} says offline (${status})`);
    await page.click('button.sort:has-text("status")');
    await page
      .waitForFunction((id) => document.querySelector("table.fleet tbody tr")?.getAttribute("data-device") === id, env.OFFLINE, {
        timeout: 10000,
      })
      .catch(() => undefined); // the server sorts: the page comes back with the next response
    const first = await page.getAttribute("table.fleet tbody tr", "data-device");
    check(first === env.OFFLINE, `sorting by status puts offline devices first (got ${first})`);
  }
  if (env.HEADLINE) {
    const head = JSON.parse(env.HEADLINE);
    const columns = await page.locator("table.fleet thead th").allTextContents();
    check(columns.some((c) => c.trim().startsWith(head.label)), `a "${head.label}" column from the plugin (got ${columns})`);
    const cell = page.locator(`tr[data-device="${env.AGENT_DEVICE}"] td[data-headline="${head.label}"] .num`);
    const text = (await cell.textContent())?.trim();
    check(text === head.value, `${env.AGENT_DEVICE} shows ${head.value} under ${head.label} (got ${text})`);
  }
  if (env.ALERT) {
    const alert = JSON.parse(env.ALERT);
    await page.waitForFunction(
      ([id, text]) => document.querySelector(`tr[data-device="${id}"] td.alert-cell`)?.textContent?.includes(text),
      [env.AGENT_DEVICE, alert.cell],
      { timeout: 20000 },
    ).catch(() => undefined);
    const cell = (await page.locator(`tr[data-device="${env.AGENT_DEVICE}"] td.alert-cell`).textContent())?.trim();
    check(cell === alert.cell, `the overview shows ${alert.cell} for ${env.AGENT_DEVICE} (got ${cell})`);
    const summary = (await page.locator(".summary-bar").textContent()) ?? "";
    check(/[1-9]\d* critical/.test(summary), `the fleet summary counts the critical alert (got ${summary})`);
  }
  await page.waitForTimeout(500); // sparklines
  await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });

  await page.fill('input[aria-label="search devices"]', device);
  await page.waitForFunction((id) => {
    const rows = [...document.querySelectorAll("table.fleet tbody tr")];
    return rows.length === 1 && rows[0].getAttribute("data-device") === id;
  }, device);
  check(page.url().includes(`q=${encodeURIComponent(device)}`), "the search is in the URL");
  await page.click(`tr[data-device="${device}"] a`);
  await page.waitForSelector("table.snapshot");
  // No metric in the URL: the page opens on the default charts (CPU, memory, the disks, the GPU).
  await page.waitForSelector('.chart[data-series="6"]', { timeout: 15000 }).catch(() => undefined);
  const opened = await page.getAttribute(".chart", "data-series").catch(() => null);
  check(opened === "6", `the device page opens on CPU, memory, 3 disks and the GPU (got ${opened} series)`);

  for (const metric of metrics) {
    await page.fill('input[aria-label="search metrics"]', metric);
    await page.locator("ul.matches label", { hasText: new RegExp(`^${metric}$`) }).locator("input").check();
  }
  await page.waitForSelector(`.chart[data-series="${metrics.length}"]`);
  const points = Number(await page.getAttribute(".chart", "data-points"));
  check(points === Number(env.POINTS), `chart draws ${env.POINTS} points (got ${points})`);
  const canvas = await page.locator(".chart canvas").count();
  check(canvas >= 1, "uPlot drew a canvas");
  const url = new URL(page.url());
  check(JSON.stringify(url.searchParams.getAll("m")) === JSON.stringify(metrics), `metrics in the URL: ${url.search}`);

  for (const [key, expected] of Object.entries(JSON.parse(env.VALUES))) {
    const text = (await page.locator(`tr[data-key="${key}"] td.num`).textContent())?.trim();
    check(text === expected, `snapshot ${key} shows ${expected} (got ${text})`);
  }
  if (env.PLUGIN_PROBLEM) {
    const problems = (await page.locator("section.plugin-problems").textContent()) ?? "";
    check(problems.includes(env.PLUGIN_PROBLEM), `the failing plugin and its reason are shown (got ${problems})`);
  }
  await page.screenshot({ path: `${shots}/device.png`, fullPage: true });

  // A shared link opens the same view.
  const again = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  await again.goto(page.url(), { waitUntil: "networkidle" });
  await again.waitForSelector(`.chart[data-series="${metrics.length}"]`);
  check((await again.getAttribute(".chart", "data-points")) === String(points), "a shared link shows the same chart");

  // A chart of two units has an axis for each, labelled with its unit.
  if (env.AGENT_DEVICE) {
    const agentMetrics = env.AGENT_METRICS.split(",");
    const query = agentMetrics.map((m) => `m=${encodeURIComponent(m)}`).join("&");
    await again.goto(`${base}/devices/${encodeURIComponent(env.AGENT_DEVICE)}?${query}&range=15m`, { waitUntil: "networkidle" });
    await again.waitForSelector(`.chart[data-series="${agentMetrics.length}"]`);
    const axes = await again.getAttribute(".chart", "data-axes");
    check(axes === env.AGENT_AXES, `one axis per unit: ${env.AGENT_AXES} (got ${axes})`);
    const drawn = await again.getAttribute(".chart", "data-drawn-axes");
    check(drawn === env.AGENT_AXES, `uPlot got one labelled axis per unit: ${env.AGENT_AXES} (got ${drawn})`);
    const boot = (await again.locator('tr[data-key="system-boot_time"] td.num').textContent())?.trim() ?? "";
    check(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/.test(boot), `the boot time reads as a date (got ${boot})`);
  }

  // The device page lists the alert and shades its period on the chart of its metric.
  if (env.ALERT) {
    const alert = JSON.parse(env.ALERT);
    await again.goto(`${base}/devices/${encodeURIComponent(env.AGENT_DEVICE)}?m=${alert.metric}&range=15m`, { waitUntil: "networkidle" });
    await again.waitForSelector(`section.alerts tr[data-rule="${alert.rule}"]`);
    const row = (await again.locator(`section.alerts tr[data-rule="${alert.rule}"]`).textContent()) ?? "";
    check(row.includes("critical") && row.includes(alert.metric), `the device lists the alert (got ${row})`);
    if (alert.silenced) {
      await again.waitForSelector(`section.alerts tr[data-rule="${alert.rule}"] .silenced`, { timeout: 10000 }).catch(() => undefined);
      const muted = (await again.locator(`section.alerts tr[data-rule="${alert.rule}"] .silenced`).textContent()) ?? "";
      check(muted.includes("silenced until") && muted.includes(alert.silenced), `the silence is shown next to the alert (got ${muted})`);
    }
    await again.waitForSelector('.chart[data-alert-bands="1"]', { timeout: 10000 }).catch(() => undefined);
    const bands = await again.getAttribute(".chart", "data-alert-bands");
    check(bands === "1", `the chart of ${alert.metric} shades the alert's period (got ${bands})`);
    await again.screenshot({ path: `${shots}/device-alert.png`, fullPage: true });
  }

  // Configuration drift: on the overview (the row and the count) and on the device page.
  if (env.DRIFT) {
    await again.goto(base + "/", { waitUntil: "networkidle" });
    await again.waitForSelector(`tr[data-device="${env.DRIFT}"] .badge.drift`, { timeout: 15000 }).catch(() => undefined);
    const badge = (await again.locator(`tr[data-device="${env.DRIFT}"] .badge.drift`).count()) === 1;
    check(badge, `the overview marks ${env.DRIFT} as drifting`);
    const count = (await again.locator('[aria-label="configuration drift"]').textContent())?.trim() ?? "";
    check(count === "1 config drift", `the overview counts the drifting device (got ${count})`);
    await again.goto(`${base}/devices/${encodeURIComponent(env.DRIFT)}`, { waitUntil: "networkidle" });
    await again.waitForSelector("[data-config-drift]");
    const said = (await again.locator("[data-config-drift]").textContent()) ?? "";
    check(said.startsWith("drift: version none applied"), `the device page says what drifts (got ${said})`);
  }

  // An API error is shown, not swallowed.
  await again.goto(base + "/devices/no-such-device", { waitUntil: "networkidle" });
  const alert = await again.locator('[role="alert"]').textContent();
  check(alert?.includes("no device 'no-such-device'"), `the API's error is shown (got ${alert})`);
  check(errors.length === 0, `no page errors: ${errors.join("; ")}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify({ ok: failures.length === 0, failures }));
process.exit(failures.length === 0 ? 0 : 1);
