// The overview at fleet scale in real headless Chromium: a server holding FLEET devices (10,000) pages,
// sorts and searches on the server, the browser never downloads the fleet, and one page renders fast.
// Env: BASE_URL, FLEET (device count), TOP (the device with the highest CPU), CHROMIUM.
import { chromium } from "playwright-core";

const env = process.env;
const base = env.BASE_URL;
const fleet = Number(env.FLEET);
const browser = await chromium.launch({
  executablePath: env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
const failures = [];
const check = (ok, what) => {
  if (!ok) failures.push(what);
};
const result = {};
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  page.on("pageerror", (err) => errors.push(String(err)));
  const requests = [];
  page.on("request", (r) => requests.push(new URL(r.url()).pathname + new URL(r.url()).search));
  // When the first page's 50 rows are in the DOM (a MutationObserver), against when its response ended.
  await page.addInitScript(() => {
    const watch = () => {
      const rows = document.querySelectorAll("table.fleet tbody tr").length;
      if (rows >= 50 && window.__rendered === undefined) window.__rendered = performance.now();
    };
    new MutationObserver(watch).observe(document, { childList: true, subtree: true });
  });
  await page.goto(base + "/", { waitUntil: "networkidle" });
  await page.waitForSelector("table.fleet tbody tr");
  const timing = await page.evaluate(() => {
    const entry = performance.getEntriesByType("resource").find((e) => e.name.includes("/api/v1/overview"));
    return { rendered: window.__rendered, responseEnd: entry?.responseEnd, fetch: entry ? entry.responseEnd - entry.startTime : null };
  });
  result.render_ms = timing.rendered - timing.responseEnd;
  result.overview_request_ms = timing.fetch;
  const rows = await page.locator("table.fleet tbody tr").count();
  check(rows === 50, `the first page has 50 rows (got ${rows})`);
  const pager = (await page.locator(".pager span").textContent())?.trim();
  check(pager === `page 1 of ${fleet / 50}`, `the pager counts the whole fleet (got ${pager})`);
  const total = await page.getAttribute("[data-total]", "data-total");
  check(total === String(fleet), `the server reports ${fleet} devices (got ${total})`);
  const summary = (await page.locator(".summary-bar").textContent()) ?? "";
  check(summary.includes(`${fleet} devices`), `the summary bar counts the fleet (got ${summary.slice(0, 80)})`);
  check(!requests.some((r) => r.startsWith("/api/v1/devices")), `nothing downloads the fleet (${requests.filter((r) => r.startsWith("/api/v1/devices")).length} /devices requests)`);
  const sparkRequests = requests.filter((r) => r.startsWith("/api/v1/sparklines"));
  check(sparkRequests.length === 1, `one request for the page's sparklines (got ${sparkRequests.length})`);

  // Sorting by a headline column is the server's work: the request carries it, the top device comes back.
  const sorted = page.waitForRequest((r) => r.url().includes("/api/v1/overview") && r.url().includes("sort=h%3ACPU"));
  await page.click('button.sort:has-text("CPU")');
  await sorted;
  const ascending = page.waitForRequest((r) => r.url().includes("sort=h%3ACPU") && r.url().includes("desc=1"));
  await page.click('button.sort:has-text("CPU")');
  await ascending;
  await page.waitForFunction((id) => document.querySelector("table.fleet tbody tr")?.getAttribute("data-device") === id, env.TOP, { timeout: 10000 }).catch(() => undefined);
  const first = await page.getAttribute("table.fleet tbody tr", "data-device");
  check(first === env.TOP, `CPU descending puts ${env.TOP} first (got ${first})`);

  // The next page is another server request.
  const next = page.waitForRequest((r) => r.url().includes("/api/v1/overview") && r.url().includes("page=2"));
  await page.click('button:has-text("next")');
  await next;
  await page.waitForFunction(() => document.querySelector(".pager span")?.textContent?.startsWith("page 2 of"), null, { timeout: 10000 }).catch(() => undefined);
  const pager2 = (await page.locator(".pager span").textContent())?.trim();
  check(pager2 === `page 2 of ${fleet / 50}`, `page 2 (got ${pager2})`);
  check(page.url().includes("page=2"), "the page is in the URL");

  // The search too.
  await page.fill('input[aria-label="search devices"]', "dev-0999");
  await page.waitForFunction(() => document.querySelector("[data-total]")?.getAttribute("data-total") === "10", null, { timeout: 10000 }).catch(() => undefined);
  const found = await page.getAttribute("[data-total]", "data-total");
  check(found === "10", `"dev-0999" matches dev-09990 to dev-09999 (got ${found})`);
  check(errors.length === 0, `no page errors: ${errors.join("; ")}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify({ ok: failures.length === 0, failures, ...result }));
process.exit(failures.length === 0 ? 0 : 1);
