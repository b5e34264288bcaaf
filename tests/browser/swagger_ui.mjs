// Browser check of the served Swagger UI (run by tests/browser.rs): every spec operation is listed,
// and "Try it out" -> "Execute" on GET /v1/leases renders a 200 with the real leases.
//
// Usage: node swagger_ui.mjs <base-url> <screenshot.png> [expected-lease-id]
// Environment: CHROMIUM (default /usr/bin/chromium).
// Prints one "PASS ..." line and exits 0, or prints "FAIL: ..." and exits 1.

import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, screenshot, expectedLeaseId] = process.argv.slice(2);
if (!base || !screenshot) {
  console.error('usage: node swagger_ui.mjs <base-url> <screenshot.png> [expected-lease-id]');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
// Each step waits at most this long; the Rust harness has its own overall timeout on top.
const STEP_MS = 30_000;
const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

function fail(message) {
  throw new Error(message);
}

// The operations come from the served spec, not from a list kept here, so a new endpoint is
// checked without editing this script.
async function specOperations() {
  const resp = await fetch(new URL('/openapi.json', base));
  if (resp.status !== 200) fail(`GET /openapi.json answered ${resp.status}`);
  const spec = await resp.json();
  const ops = [];
  for (const [path, item] of Object.entries(spec.paths ?? {})) {
    for (const method of HTTP_METHODS) {
      const op = item[method];
      if (!op) continue;
      // The project sets one on every operation (stable names for SDK generators); Swagger UI
      // names an operation's block after it.
      if (!op.operationId) fail(`${method.toUpperCase()} ${path} has no operationId in the spec`);
      ops.push({ method, path, operationId: op.operationId, tags: op.tags?.length ? op.tags : ['default'] });
    }
  }
  if (ops.length === 0) fail('the served spec has no operations');
  return { spec, ops };
}

// Swagger UI builds an operation's DOM id from tag and operationId, with whitespace made `_`
// (deep linking); the same escaping is applied here so that tags with spaces would still match.
const domId = (tag, operationId) =>
  `operations-${tag.replace(/\s/g, '_')}-${operationId.replace(/\s/g, '_')}`;

async function main() {
  const { spec, ops } = await specOperations();
  const title = spec.info?.title;

  // A new, empty profile per run: no state from earlier runs, nothing shared with other tests.
  const profile = mkdtempSync(join(tmpdir(), 'blazar-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    timeout: STEP_MS,
    viewport: { width: 1280, height: 900 },
    // The flags known to work as root on a machine without internet access (see
    // /work/shared/stack-notes.md): without the background-networking ones Chromium keeps
    // trying to reach Google's hosts.
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const problems = [];
  const offsite = [];
  let page;
  try {
    context.setDefaultTimeout(STEP_MS);
    // The page must work from the service alone: anything it asks of another host is recorded
    // (and refused, as this machine's network would) so that the report shows it.
    const origin = new URL(base).origin;
    await context.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith(origin) || url.startsWith('data:') || url.startsWith('blob:')) {
        return route.continue();
      }
      offsite.push(url);
      return route.abort();
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (e) => problems.push(`uncaught error in page: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
    });

    const docs = await page.goto(new URL('/docs', base).href, { waitUntil: 'load' });
    if (!docs || docs.status() !== 200) fail(`GET /docs answered ${docs?.status()}`);
    await page.waitForSelector('.swagger-ui .info .title');
    const shownTitle = (await page.textContent('.swagger-ui .info .title')) ?? '';
    if (title && !shownTitle.includes(title)) fail(`page title "${shownTitle}" lacks the spec title "${title}"`);
    await page.waitForSelector('.opblock');

    // Every (operation, tag) pair of the served spec must be an operation block in the page with
    // the same method and path; blocks that the spec does not have are wrong too (the page embeds
    // its own copy of the spec, which must be the served one).
    const blocks = await page.$$eval('.opblock', (els) =>
      els.map((el) => ({
        id: el.id,
        method: (el.querySelector('.opblock-summary-method')?.textContent ?? '').trim().toLowerCase(),
        path: el.querySelector('.opblock-summary-path')?.getAttribute('data-path') ?? '',
      })),
    );
    const missing = [];
    const expectedIds = new Set();
    for (const op of ops) {
      for (const tag of op.tags) {
        const id = domId(tag, op.operationId);
        expectedIds.add(id);
        const block = blocks.find((b) => b.id === id);
        if (!block || block.method !== op.method || block.path !== op.path) {
          missing.push(`${op.method.toUpperCase()} ${op.path} (${op.operationId}, tag ${tag})` +
            (block ? `: shown as ${block.method.toUpperCase()} ${block.path}` : ': not in the page'));
        }
      }
    }
    const extra = blocks.filter((b) => !expectedIds.has(b.id)).map((b) => `${b.method} ${b.path} #${b.id}`);
    if (missing.length) fail(`operations of /openapi.json missing from /docs:\n  ${missing.join('\n  ')}`);
    if (extra.length) fail(`operations in /docs that /openapi.json lacks:\n  ${extra.join('\n  ')}`);
    console.log(`ok: all ${ops.length} operations of /openapi.json are listed in /docs (${blocks.length} blocks: one per operation and tag)`);

    // GET /v1/leases: expand, "Try it out", "Execute", read what Swagger UI renders.
    const list = ops.find((o) => o.method === 'get' && o.path === '/v1/leases') ?? fail('spec has no GET /v1/leases');
    const block = page.locator(`[id="${domId(list.tags[0], list.operationId)}"]`);
    await block.locator('.opblock-summary').first().click();
    await block.locator('button.try-out__btn').click();
    await block.locator('button.execute').click();
    const row = block.locator('.live-responses-table tr.response').first();
    await row.waitFor();
    const status = ((await row.locator('.response-col_status').textContent()) ?? '').trim();
    const bodyText = ((await row.locator('.response-col_description pre').first().textContent()) ?? '').trim();
    const requestUrl = ((await block.locator('.request-url pre').textContent()) ?? '').trim();
    if (status !== '200') fail(`Swagger UI shows status "${status}" for GET /v1/leases; body: ${bodyText}`);
    if (requestUrl !== new URL('/v1/leases', base).href) fail(`Swagger UI sent the request to ${requestUrl}`);
    let body;
    try {
      body = JSON.parse(bodyText);
    } catch (e) {
      fail(`the response body shown is not JSON: ${bodyText.slice(0, 500)}`);
    }
    const leases = body?.leases;
    if (!Array.isArray(leases) || leases.length === 0) fail(`the response body shown has no leases: ${bodyText.slice(0, 500)}`);
    if (expectedLeaseId && !leases.some((l) => l.id === expectedLeaseId)) {
      fail(`lease ${expectedLeaseId} is not in the response body shown: ${bodyText.slice(0, 500)}`);
    }
    console.log(`ok: Try it out -> Execute on GET /v1/leases shows 200 with ${leases.length} lease(s): ` +
      leases.map((l) => `${l.name} (${l.id})`).join(', '));

    if (problems.length) fail(`the page reported problems:\n  ${problems.join('\n  ')}`);

    // The whole page: every operation, and GET /v1/leases open with its live response.
    mkdirSync(dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(`ok: screenshot ${screenshot}`);
    // The full page is ~8000 px tall, too small to read when scaled down; this one is the
    // executed operation alone, from its summary to the end of the live response, at 1:1.
    const clip = await block.evaluate((el) => {
      const top = el.getBoundingClientRect();
      const end = el.querySelector('.live-responses-table').getBoundingClientRect();
      return { x: top.left, y: top.top + window.scrollY, width: top.width, height: end.bottom - top.top };
    });
    const detail = screenshot.replace(/(\.png)?$/, '-list-leases.png');
    await page.screenshot({ path: detail, fullPage: true, clip });
    console.log(`ok: screenshot ${detail}`);
    if (offsite.length) console.log(`note: the page asked for other hosts (refused): ${offsite.join(', ')}`);
    console.log(`PASS swagger-ui: ${ops.length} operations listed, GET /v1/leases executed with 200`);
  } catch (e) {
    // What the page looked like when it failed, next to where the good screenshot would be.
    const shot = screenshot.replace(/(\.png)?$/, '.failed.png');
    if (page) {
      mkdirSync(dirname(shot), { recursive: true });
      await page.screenshot({ path: shot, fullPage: true }).then(
        () => console.error(`failure screenshot: ${shot}`),
        () => {},
      );
    }
    if (problems.length) e.message += `\npage problems:\n  ${problems.join('\n  ')}`;
    if (offsite.length) e.message += `\nrequests to other hosts (refused): ${offsite.join(', ')}`;
    throw e;
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`FAIL: ${e.message}`);
  process.exit(1);
});
