// Browser check of the host calendar page at /calendar (run by tests/calendar.rs): the rows and
// bars match what the API holds, for an admin and for a project member; view switch, scrolling and
// the filter box; "find a slot" shows the windows of a direct findAvailability call and marks them;
// a picked window pre-fills the lease form, whose lease the API then has and the page shows; a
// Keystone token typed in goes on every request.
//
// Usage: node calendar.mjs <base-url> <screenshot.png> <facts.json>
// facts.json (written by the Rust test from the existing admin endpoints, not the calendar's):
//   { monday: "YYYY-MM-DD", member: { project, roles }, gpu_filter,
//     hosts: [{ id, name, gpu, bookings: [{ lease_id, lease_name, project_id, start_date, end_date }] }] }
// Environment: CHROMIUM (default /usr/bin/chromium).
// Prints "ok: ..." lines, a "RESULT {json}" line and "PASS ..." and exits 0, or "FAIL: ..." and 1.

import { mkdtempSync, rmSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, screenshot, factsFile] = process.argv.slice(2);
if (!base || !screenshot || !factsFile) {
  console.error('usage: node calendar.mjs <base-url> <screenshot.png> <facts.json>');
  process.exit(2);
}
const facts = JSON.parse(readFileSync(factsFile, 'utf8'));
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const STEP_MS = 30_000;
const DAY = 86_400_000;
const MEMBER = facts.member;
const GPU = facts.gpu_filter;
const ADMIN_NAMES = facts.hosts.map((h) => h.name);

function fail(message) {
  throw new Error(message);
}
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
function expectSame(what, got, want) {
  if (!same(got, want)) fail(`${what}:\n  page: ${JSON.stringify(got)}\n  want: ${JSON.stringify(want)}`);
}

// The API's dates are naive UTC ("2030-01-02T12:00:00.000000"); the page's inputs "2030-01-02 12:00".
function parseDate(text) {
  const m = /^(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:\.(\d+))?)?)?$/.exec(text ?? '');
  if (!m) fail(`not a date: ${text}`);
  return Date.UTC(+m[1], m[2] - 1, +m[3], +(m[4] ?? 0), +(m[5] ?? 0), +(m[6] ?? 0));
}
const pad = (n) => String(n).padStart(2, '0');
function formatDate(t) {
  const d = new Date(t);
  const s = d.getUTCSeconds() ? `:${pad(d.getUTCSeconds())}` : '';
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}${s}`;
}

const MONDAY = parseDate(facts.monday);
const WEEK = { start: MONDAY, end: MONDAY + 7 * DAY };
const DAY_RANGE = { start: MONDAY, end: MONDAY + DAY };
const NEXT_WEEK = { start: MONDAY + 7 * DAY, end: MONDAY + 14 * DAY };
const md = new Date(MONDAY);
const MONTH = { start: Date.UTC(md.getUTCFullYear(), md.getUTCMonth(), 1), end: Date.UTC(md.getUTCFullYear(), md.getUTCMonth() + 1, 1) };
function weekOf(t) {
  const d = new Date(t);
  const start = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() - ((d.getUTCDay() + 6) % 7));
  return { start, end: start + 7 * DAY };
}
const overlaps = (b, r) => parseDate(b.start_date) < r.end && parseDate(b.end_date) > r.start;

/** The rows an admin must see over range `r`: every host (or the GPU ones), its leases' names. */
function adminRows(r, onlyGpu = false) {
  return facts.hosts
    .filter((h) => !onlyGpu || h.gpu === 'true')
    .map((h) => {
      const b = h.bookings.filter((x) => overlaps(x, r));
      return { label: h.name, hostId: h.id, bars: b.map((x) => x.lease_name).sort(), leaseIds: b.map((x) => x.lease_id).sort() };
    });
}

/** What a member must see: anonymous rows in the same (id) order, its own leases by name, and
 * every other project's as "reserved" with no id. */
function memberRows(r) {
  return facts.hosts.map((h) => {
    const b = h.bookings.filter((x) => overlaps(x, r));
    const mine = b.filter((x) => x.project_id === MEMBER.project);
    return {
      bars: b.map((x) => (x.project_id === MEMBER.project ? x.lease_name : 'reserved')).sort(),
      leaseIds: mine.map((x) => x.lease_id).sort(),
    };
  });
}

/** A direct API call, as the page would make it for `who` (null: the server's defaults, admin). */
async function api(path, params = {}, who = null) {
  const url = new URL(path, base);
  for (const [k, v] of Object.entries(params)) if (v !== '' && v !== undefined) url.searchParams.set(k, v);
  const headers = { Accept: 'application/json' };
  if (who) Object.assign(headers, { 'X-Project-Id': who.project, 'X-Roles': who.roles });
  const resp = await fetch(url, { headers });
  return { status: resp.status, body: await resp.json() };
}

async function main() {
  const profile = mkdtempSync(join(tmpdir(), 'blazar-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    timeout: STEP_MS,
    viewport: { width: 1400, height: 720 },
    // The flags known to work as root on a machine without internet access (see
    // /work/shared/stack-notes.md and tests/browser/swagger_ui.mjs).
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const problems = [];
  const offsite = [];
  const apiRequests = []; // every /v1 request the page makes: method, path, identity headers
  let allowed400 = 0; // console errors the bad-filter step causes on purpose
  let page;
  try {
    context.setDefaultTimeout(STEP_MS);
    const origin = new URL(base).origin;
    // The page must work from the service alone: anything asked of another host is refused and
    // fails the test.
    await context.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith(origin) || url.startsWith('data:')) return route.continue();
      offsite.push(url);
      return route.abort();
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (e) => problems.push(`uncaught error in page: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      if (allowed400 > 0 && m.text().includes('status of 400')) {
        allowed400 -= 1;
        return;
      }
      problems.push(`console error: ${m.text()}`);
    });
    page.on('request', (r) => {
      const u = new URL(r.url());
      if (!u.pathname.startsWith('/v1/')) return;
      const h = r.headers();
      apiRequests.push({ method: r.method(), path: u.pathname, token: h['x-auth-token'] ?? null, project: h['x-project-id'] ?? null, roles: h['x-roles'] ?? null });
    });

    // ---- helpers over the page ----
    const loaded = () => page.evaluate(() => Number(document.getElementById('grid')?.dataset.loaded ?? 0));
    /** Runs `action` and waits until the grid shows the answer of a newer calendar request (any
     * answer, after a navigation: the count starts again with the page). */
    async function reload(action, state = 'ready', navigation = false) {
      const before = navigation ? 0 : await loaded();
      await action();
      await page.waitForFunction((n) => Number(document.getElementById('grid').dataset.loaded ?? 0) > n, before);
      const got = await page.$eval('#grid', (g) => g.dataset.state);
      if (got !== state) fail(`the grid is "${got}", not "${state}"; error box: ${await page.textContent('#error')}`);
    }
    const readRows = () =>
      page.$$eval('#grid .row.host', (rows) =>
        rows.map((r) => {
          const bars = [...r.querySelectorAll('.bar')];
          return {
            label: r.dataset.label,
            hostId: r.dataset.hostId ?? null,
            bars: bars.map((b) => b.textContent).sort(),
            leaseIds: bars.map((b) => b.dataset.leaseId).filter(Boolean).sort(),
            mine: bars.filter((b) => b.classList.contains('mine')).map((b) => b.textContent).sort(),
            slots: r.querySelectorAll('.slot').length,
          };
        }));
    async function checkAdmin(what, r, onlyGpu = false) {
      const rows = await readRows();
      expectSame(`${what}: rows and bars`, rows.map(({ label, hostId, bars, leaseIds }) => ({ label, hostId, bars, leaseIds })), adminRows(r, onlyGpu));
      const bars = rows.reduce((n, x) => n + x.bars.length, 0);
      console.log(`ok: ${what}: ${rows.length} host rows, ${bars} bars, labelled with their leases' names`);
      return rows;
    }
    async function checkMember(what, r) {
      const rows = await readRows();
      const want = memberRows(r);
      expectSame(`${what}: bars`, rows.map(({ bars, leaseIds }) => ({ bars, leaseIds })), want);
      const labels = rows.map((x) => x.label);
      if (!labels.every((l) => /^host \d+$/.test(l)) || new Set(labels).size !== labels.length) fail(`${what}: row labels ${labels}`);
      if (rows.some((x) => x.hostId !== null)) fail(`${what}: a row carries a host id`);
      const text = await page.textContent('#grid');
      for (const name of ADMIN_NAMES) if (text.includes(name)) fail(`${what}: the page shows host name ${name} to a member`);
      const reserved = rows.reduce((n, x) => n + x.bars.filter((b) => b === 'reserved').length, 0);
      const own = rows.reduce((n, x) => n + x.leaseIds.length, 0);
      console.log(`ok: ${what}: ${rows.length} anonymous rows (${labels.join(', ')}), ${own} own bars by name, ${reserved} "reserved"`);
      return rows;
    }
    async function setFilter(text) {
      await page.fill('#resource-filter', text);
      await reload(() => page.click('#filter-form button[type="submit"]'));
    }
    async function setIdentity(values) {
      if (!(await page.$eval('#identity', (d) => d.open))) await page.click('#identity summary');
      await page.fill('#token', values.token ?? '');
      await page.fill('#project-id', values.project ?? '');
      await page.fill('#roles', values.roles ?? '');
      await reload(() => page.click('#auth-form button[type="submit"]'));
    }
    /** Finds windows with the form; checks they are those of a direct call; returns them. */
    async function findSlot(what, who, min = '2') {
      const params = { min, duration: 'PT4H', after: formatDate(MONDAY), resource_properties: await page.inputValue('#resource-filter') };
      await page.fill('#slot-min', params.min);
      await page.fill('#slot-max', '');
      await page.fill('#slot-duration', params.duration);
      await page.fill('#slot-after', params.after);
      await page.click('#slot-form button[type="submit"]');
      await page.waitForSelector('#windows[data-state="ready"]');
      const direct = await api('/v1/os-hosts/availability', params, who);
      if (direct.status !== 200) fail(`direct findAvailability answered ${direct.status}: ${JSON.stringify(direct.body)}`);
      const windows = direct.body.windows;
      if (!windows.length) fail(`${what}: the direct call found no window; the test's data leaves one`);
      const shown = await page.$$eval('#windows .window', (bs) => bs.map((b) => ({ start: b.dataset.start, end: b.dataset.end, text: b.textContent })));
      expectSame(`${what}: windows listed`, shown.map((w) => [w.start, w.end]), windows.map((w) => [w.start_date, w.end_date]));
      shown.forEach((w, i) => {
        if (!w.text.includes(`${windows[i].count} host(s)`)) fail(`${what}: window ${i} says "${w.text}", count ${windows[i].count}`);
      });
      const inView = windows.filter((w) => overlaps(w, WEEK));
      if (!inView.length) fail(`${what}: no window in the week shown`);
      console.log(`ok: ${what}: ${windows.length} window(s) listed as the direct call's: ` +
        windows.map((w) => `${w.start_date}..${w.end_date} x${w.count}${w.hosts ? ` [${w.hosts}]` : ''}`).join(', '));
      return { windows, inView };
    }

    // ---- 1. The admin (no identity headers: the server's defaults), the week of the leases ----
    await reload(async () => {
      const resp = await page.goto(new URL(`/calendar?view=week&date=${facts.monday}`, base).href);
      if (resp.status() !== 200) fail(`GET /calendar answered ${resp.status()}`);
    }, 'ready', true);
    await checkAdmin('admin, week', WEEK);
    const title = await page.textContent('#range');
    if (!title.startsWith(`Mon ${md.getUTCDate()} `)) fail(`range title "${title}" does not start on the Monday`);

    // ---- 2. Views and scrolling ----
    await reload(() => page.click('[data-view="day"]'));
    await checkAdmin('admin, day', DAY_RANGE);
    await reload(() => page.click('[data-view="month"]'));
    await checkAdmin('admin, month', MONTH);
    if ((await page.$$('#grid .head .tick')).length !== (MONTH.end - MONTH.start) / DAY) fail('month view: not one column per day');
    await reload(() => page.click('[data-view="week"]'));
    if ((await page.$$('#grid .head .tick')).length !== 7) fail('week view: not seven columns');
    await reload(() => page.click('#next'));
    await checkAdmin('admin, next week', NEXT_WEEK);
    await reload(() => page.click('#prev'));
    await checkAdmin('admin, back a week', WEEK);
    await reload(() => page.click('#today'));
    await checkAdmin('admin, this week ("today")', weekOf(Date.now()));
    const today = formatDate(Date.now()).slice(0, 10);
    if (new URL(page.url()).searchParams.get('date') !== today) fail(`"today" left the URL at ${page.url()}`);
    await reload(() => page.goto(new URL(`/calendar?view=week&date=${facts.monday}`, base).href), 'ready', true);

    // ---- 3. The filter box ----
    await setFilter(GPU);
    const gpuRows = await checkAdmin(`admin, filter ${GPU}`, WEEK, true);
    if (gpuRows.length === 0 || gpuRows.length === facts.hosts.length) fail('the GPU filter should narrow the rows');
    const bad = '["==", "$gpu"';
    const direct = await api('/v1/os-hosts/calendar', { after: formatDate(WEEK.start), before: formatDate(WEEK.end), resource_properties: bad });
    if (direct.status !== 400 || !direct.body.error_message) fail(`a bad filter answered ${direct.status}: ${JSON.stringify(direct.body)}`);
    allowed400 += 1;
    await page.fill('#resource-filter', bad);
    await reload(() => page.click('#filter-form button[type="submit"]'), 'error');
    const shownError = (await page.textContent('#error')).trim();
    if (!(await page.isVisible('#error')) || shownError !== direct.body.error_message) {
      fail(`a bad filter shows "${shownError}", the API says "${direct.body.error_message}"`);
    }
    if ((await readRows()).length !== 0) fail('rows are still shown under a filter the API refused');
    console.log(`ok: a bad filter shows the API's error_message: "${shownError}"`);
    await setFilter(GPU);
    if (await page.isVisible('#error')) fail('the error box stays after a good filter');

    // ---- 4. Find a slot, as the admin: windows on their exact hosts ----
    {
      const { inView } = await findSlot('admin, find 2 GPU hosts for PT4H', null);
      const rows = await readRows();
      for (const row of rows) {
        const want = inView.filter((w) => w.hosts.includes(row.hostId)).length;
        if (row.slots !== want) fail(`admin: row ${row.label} marks ${row.slots} window(s), want ${want}`);
      }
      if ((await page.$$('#grid .band')).length !== 0) fail('admin: windows drawn as bands, not on their hosts');
      console.log(`ok: admin: ${rows.reduce((n, r) => n + r.slots, 0)} window mark(s) on the windows' own host rows`);
    }

    // ---- 5. A project member (noauth headers from the identity fields) ----
    await setIdentity(MEMBER);
    if (!(await page.textContent('#who')).includes(MEMBER.project)) fail('the identity summary lacks the project');
    await setFilter('');
    await checkMember(`member of ${MEMBER.project}, week`, WEEK);
    await reload(() => page.click('[data-view="month"]'));
    await checkMember(`member of ${MEMBER.project}, month`, MONTH);
    await reload(() => page.click('[data-view="week"]'));
    const memberCalls = apiRequests.filter((r) => r.project === MEMBER.project && r.roles === MEMBER.roles);
    if (!memberCalls.length) fail('no request carried the X-Project-Id and X-Roles typed in');

    await setFilter(GPU);
    const { windows, inView } = await findSlot(`member, find 2 GPU hosts for PT4H`, MEMBER);
    if (windows.some((w) => w.hosts)) fail('a member was given the windows\' hosts');
    const bands = (await page.$$('#grid .band')).length;
    const marks = (await readRows()).reduce((n, r) => n + r.slots, 0);
    if (bands !== inView.length || marks !== 0) fail(`member: ${bands} band(s) and ${marks} host mark(s) for ${inView.length} window(s) in view`);
    console.log(`ok: member: ${bands} window(s) drawn as bands across the rows`);

    // ---- 6. Pick the first window, create its lease ----
    const w = windows[0];
    await page.click('#windows .window >> nth=0');
    const form = {
      start: await page.inputValue('#lease-start'),
      end: await page.inputValue('#lease-end'),
      min: await page.inputValue('#lease-min'),
      max: await page.inputValue('#lease-max'),
      resource: await page.inputValue('#lease-resource'),
      name: await page.inputValue('#lease-name'),
    };
    expectSame('the lease form a window fills', { ...form, name: Boolean(form.name) },
      { start: formatDate(parseDate(w.start_date)), end: formatDate(parseDate(w.end_date)), min: '2', max: '2', resource: GPU, name: true });
    console.log(`ok: the window pre-fills the lease form: ${JSON.stringify(form)}`);
    await page.fill('#lease-name', 'page-lease');
    await page.click('#lease-form button[type="submit"]');
    await page.waitForSelector('#lease-result:is([data-state="ready"], [data-state="error"])');
    const result = await page.$eval('#lease-result', (e) => ({ state: e.dataset.state, id: e.dataset.leaseId, status: e.dataset.status, text: e.textContent }));
    if (result.state !== 'ready') fail(`creating the lease failed: ${result.text}`);
    if (!result.text.includes(result.id) || !result.text.includes(result.status)) fail(`the result "${result.text}" lacks the id or status`);
    // As the admin: with the member role alone (no reader, which Keystone would imply) the
    // member may create leases but not list them.
    const listed = await api('/v1/leases', { project_id: MEMBER.project });
    const lease = listed.body.leases?.find((l) => l.id === result.id);
    if (!lease) fail(`GET /v1/leases?project_id=${MEMBER.project} lacks lease ${result.id}: ${JSON.stringify(listed.body)}`);
    expectSame('the created lease', [lease.name, parseDate(lease.start_date), parseDate(lease.end_date), lease.reservations[0].min, lease.reservations[0].max, lease.reservations[0].resource_properties],
      ['page-lease', parseDate(w.start_date), parseDate(w.end_date), 2, 2, GPU]);
    console.log(`ok: the form created lease ${lease.id} (${lease.status}), listed by GET /v1/leases`);
    await page.waitForFunction(() => !document.querySelector('#grid[data-state="loading"]'));
    const mineShown = (await readRows()).flatMap((r) => r.mine.filter((b) => b === 'page-lease'));
    if (mineShown.length !== 2) fail(`the page shows ${mineShown.length} bar(s) of the new lease, want 2 (one per host)`);
    if ((await page.$$('#windows .window')).length !== 0) fail('stale windows are still listed after the lease');
    console.log('ok: the page shows the new lease on 2 hosts, as the member\'s own');

    // ---- 7. A Keystone token typed in goes on every request, and lasts for the tab ----
    const token = 'calendar-test-token';
    let mark = apiRequests.length;
    await setIdentity({ token });
    await reload(() => page.reload(), 'ready', true);
    const sent = apiRequests.slice(mark);
    if (!sent.length || !sent.every((r) => r.token === token && r.project === null && r.roles === null)) {
      fail(`with a token the page sent: ${JSON.stringify(sent)}`);
    }
    if ((await page.inputValue('#token')) !== token) fail('the token did not survive a reload (sessionStorage)');
    console.log(`ok: the token went as X-Auth-Token on all ${sent.length} request(s), and survived a reload`);
    mark = apiRequests.length;
    if (!(await page.$eval('#identity', (d) => d.open))) await page.click('#identity summary');
    await reload(() => page.click('#auth-clear'));
    if (apiRequests.slice(mark).some((r) => r.token || r.project || r.roles)) fail('identity headers sent after "Clear"');

    // ---- 8. The admin again, every host, the new lease by name, a slot marked: the screenshot ----
    await setFilter('');
    const rows = await readRows();
    const named = rows.flatMap((r) => r.bars.filter((b) => b === 'page-lease'));
    if (named.length !== 2) fail(`the admin sees ${named.length} bar(s) named page-lease, want 2`);
    // Three hosts: several windows in the week, marked on the rows of the hosts free in each.
    const last = await findSlot('admin, find 3 hosts for PT4H', null, '3');
    const lastRows = await readRows();
    for (const row of lastRows) {
      const want = last.inView.filter((x) => x.hosts.includes(row.hostId)).length;
      if (row.slots !== want) fail(`admin: row ${row.label} marks ${row.slots} window(s), want ${want}`);
    }
    // The second window picked (not created): the lease form's proposal is in the screenshot.
    const second = last.windows[1] ?? last.windows[0];
    await page.click(`#windows .window >> nth=${last.windows.indexOf(second)}`);
    expectSame('the lease form the second window fills',
      [await page.inputValue('#lease-start'), await page.inputValue('#lease-min'), await page.inputValue('#lease-max'), await page.inputValue('#lease-resource')],
      [formatDate(parseDate(second.start_date)), '3', '3', '']);
    if (await page.$eval('#identity', (d) => d.open)) await page.click('#identity summary');
    if (problems.length) fail(`the page reported problems:\n  ${problems.join('\n  ')}`);
    if (offsite.length) fail(`the page asked other hosts for: ${offsite.join(', ')}`);
    mkdirSync(dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(`ok: screenshot ${screenshot}`);
    console.log(`RESULT ${JSON.stringify({ lease_id: lease.id, start_date: w.start_date, end_date: w.end_date, api_requests: apiRequests.length })}`);
    console.log(`PASS calendar: admin and member views, filter, ${windows.length} window(s), lease ${lease.id} created`);
  } catch (e) {
    const shot = screenshot.replace(/(\.png)?$/, '.failed.png');
    if (page) {
      mkdirSync(dirname(shot), { recursive: true });
      await page.screenshot({ path: shot, fullPage: true }).then(() => console.error(`failure screenshot: ${shot}`), () => {});
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
