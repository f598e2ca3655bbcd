// Looks at one page in a running Chromium the way a person would, for tests/support/browser.py.
//
//   node page.mjs '{"cdp": "http://127.0.0.1:PORT", "url": "...", "expect": ["..."],
//                   "screenshot": "/path.png", "timeoutMs": 30000, "measure": ["css selector"]}'
//
// Opens the URL in a fresh browser context, waits until every expected text is in the page's
// visible text (or the timeout passes), saves a full-page screenshot either way, and prints one JSON
// line: {status, title, text, missing, blocked, sizes} — `sizes` the rendered width and height in CSS
// pixels of the first element each `measure` selector finds (null: none found). Requests to any host but 127.0.0.1 are aborted and
// listed in `blocked`. The browser itself belongs to the caller, which starts and stops it.
import { chromium } from "playwright-core";

const request = JSON.parse(process.argv[2]);
const browser = await chromium.connectOverCDP(request.cdp);
// Tall: the runs list renders only the rows in view, and every deployment's run must be among them.
const context = await browser.newContext({ viewport: { width: 1440, height: 2400 }, serviceWorkers: "block" });
const blocked = [];
await context.route("**/*", (route) => {
  const url = new URL(route.request().url());
  if (url.hostname === "127.0.0.1") return route.continue();
  blocked.push(url.href);
  return route.abort("blockedbyclient");
});

try {
  const page = await context.newPage();
  const response = await page.goto(request.url, { waitUntil: "load", timeout: request.timeoutMs });
  // Compared with runs of white space as one space: how a page lays words out is not what it says.
  const shows = (texts) => {
    const said = document.body?.innerText.replace(/\s+/g, " ") ?? "";
    return texts.every((text) => said.includes(text.replace(/\s+/g, " ")));
  };
  await page.waitForFunction(shows, request.expect, { timeout: request.timeoutMs }).catch(() => {});
  const text = await page.locator("body").innerText();
  await page.screenshot({ path: request.screenshot, fullPage: true });
  const said = text.replace(/\s+/g, " ");
  const missing = request.expect.filter((expected) => !said.includes(expected.replace(/\s+/g, " ")));
  const sizes = {};
  for (const selector of request.measure ?? []) {
    const box = await page.locator(selector).first().boundingBox({ timeout: 1000 }).catch(() => null);
    sizes[selector] = box && { width: box.width, height: box.height };
  }
  console.log(JSON.stringify({ status: response?.status() ?? null, title: await page.title(), text, missing, blocked,
                               sizes }));
} finally {
  await context.close();
  // for a browser reached over CDP, close() only disconnects; the caller stops Chromium by its PID
  await browser.close();
}
