// The host calendar page (served at /calendar by src/api/calendar.rs): hosts as rows and time as
// columns from GET /v1/os-hosts/calendar, free windows from GET /v1/os-hosts/availability, and a
// lease form that POSTs /v1/leases. Plain DOM, no framework, nothing fetched from elsewhere.
// Every date is UTC: the API's dates are naive UTC, and so are the ones typed here.
// Lease names come from users: they only ever reach the page as text (textContent), never as HTML.
'use strict';

const MINUTE = 60_000;
const DAY = 86_400_000;
const VIEWS = ['day', 'week', 'month'];
const WEEKDAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
// sessionStorage keys: the identity lasts as long as the tab, and is never written to the URL.
const STORED = { token: 'blazar.calendar.token', project: 'blazar.calendar.project', roles: 'blazar.calendar.roles' };

const $ = (id) => document.getElementById(id);

const state = {
  view: 'week',
  anchor: Date.now(), // any instant inside the period shown
  filters: { resource: '', hypervisor: '' },
  calendar: null, // the last answer of getCalendar, or null after an error
  windows: [], // the last answer of findAvailability
  picked: null, // the window whose lease the form proposes
  slot: null, // what found those windows: { min, max, filters }
  loads: 0, // requests of the calendar so far: a late answer of an older one is dropped
};

// ---- Dates, all in UTC -------------------------------------------------------------------------

const pad = (n) => String(n).padStart(2, '0');

/** "2030-01-02T12:00:00.000000" (or "2030-01-02 12:00", seconds optional) -> ms, read as UTC. */
function parseDate(text) {
  const m = /^(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,6}))?)?)?$/.exec(text ?? '');
  if (!m) return NaN;
  const ms = m[7] ? Math.floor(Number(m[7].padEnd(6, '0')) / 1000) : 0;
  return Date.UTC(+m[1], m[2] - 1, +m[3], +(m[4] ?? 0), +(m[5] ?? 0), +(m[6] ?? 0), ms);
}

/** ms -> "2030-01-02 12:00" (with ":SS" when the seconds are not zero), as the API accepts it. */
function formatDate(t) {
  const d = new Date(t);
  const seconds = d.getUTCSeconds() ? `:${pad(d.getUTCSeconds())}` : '';
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}${seconds}`;
}

const dayName = (t) => {
  const d = new Date(t);
  return `${WEEKDAYS[d.getUTCDay()]} ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]}`;
};

/** The period a view shows around `anchor`: [start, end) and its columns (one tick each). */
function viewRange(view, anchor) {
  const d = new Date(anchor);
  const [y, m, day] = [d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()];
  let start, end, step, label, title;
  if (view === 'day') {
    start = Date.UTC(y, m, day);
    end = start + DAY;
    step = (i) => start + i * 3_600_000;
    label = (t) => `${pad(new Date(t).getUTCHours())}:00`;
    title = `${dayName(start)} ${y}`;
  } else if (view === 'week') {
    start = Date.UTC(y, m, day - ((d.getUTCDay() + 6) % 7)); // weeks start on Monday
    end = start + 7 * DAY;
    step = (i) => start + i * DAY;
    label = dayName;
    title = `${dayName(start)} – ${dayName(end - DAY)} ${new Date(end - DAY).getUTCFullYear()}`;
  } else {
    start = Date.UTC(y, m, 1);
    end = Date.UTC(y, m + 1, 1);
    step = (i) => start + i * DAY;
    label = (t) => `${WEEKDAYS[new Date(t).getUTCDay()][0]} ${new Date(t).getUTCDate()}`;
    title = `${MONTHS[m]} ${y}`;
  }
  const ticks = [];
  for (let t = step(0), i = 0; t < end; t = step(++i)) ticks.push({ at: t, label: label(t) });
  return { start, end, ticks, title: `${title} (UTC)` };
}

/** The anchor one period earlier (dir -1) or later (+1). */
function shifted(view, anchor, dir) {
  if (view === 'month') {
    const d = new Date(anchor);
    return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + dir, 1);
  }
  return anchor + dir * (view === 'day' ? DAY : 7 * DAY);
}

// ---- The API ----------------------------------------------------------------------------------

function identity() {
  const get = (k) => sessionStorage.getItem(STORED[k]) ?? '';
  return { token: get('token'), project: get('project'), roles: get('roles') };
}

/** One API call with the identity headers; resolves to the JSON answer, or throws an Error whose
 * message is the envelope's error_message. Empty query parameters are left out. */
async function api(method, path, params = {}, body = undefined) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && String(v).trim() !== '') url.searchParams.set(k, String(v).trim());
  }
  const headers = { Accept: 'application/json' };
  const who = identity();
  if (who.token) headers['X-Auth-Token'] = who.token;
  if (who.project) headers['X-Project-Id'] = who.project;
  if (who.roles) headers['X-Roles'] = who.roles;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new Error(`The server could not be reached (${method} ${url.pathname}): ${e.message}`);
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON (a proxy's error page): the status says what happened.
  }
  if (!resp.ok) throw new Error(data?.error_message ?? `${method} ${url.pathname}: ${resp.status} ${resp.statusText}`);
  if (data === null) throw new Error(`${method} ${url.pathname}: the answer is not JSON`);
  return data;
}

function showError(message) {
  const box = $('error');
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

// ---- The grid ---------------------------------------------------------------------------------

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** Puts `e` over [from, to) of range `r` (a fraction of the track); false when outside it. */
function place(e, from, to, r) {
  const [s, t] = [Math.max(from, r.start), Math.min(to, r.end)];
  if (!(t > s)) return false;
  const span = r.end - r.start;
  e.style.left = `${((s - r.start) / span) * 100}%`;
  e.style.width = `${((t - s) / span) * 100}%`;
  e.classList.toggle('cut-start', from < r.start);
  e.classList.toggle('cut-end', to > r.end);
  return true;
}

const windowText = (w) => {
  const [s, e] = [formatDate(parseDate(w.start_date)), formatDate(parseDate(w.end_date))];
  return `${s} – ${e.slice(0, 10) === s.slice(0, 10) ? e.slice(11) : e} UTC`;
};

/** A lease's own colour, the same on every host and view: a hue from its id. */
function leaseColour(id) {
  let h = 0;
  for (const c of id) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h}, 45%, 42%)`;
}

function render() {
  const r = viewRange(state.view, state.anchor);
  $('range').textContent = r.title;
  for (const b of document.querySelectorAll('[data-view]')) b.setAttribute('aria-pressed', String(b.dataset.view === state.view));
  const grid = $('grid');
  grid.replaceChildren();
  grid.style.setProperty('--cols', r.ticks.length);
  grid.dataset.view = state.view;

  const head = el('div', 'row head');
  const ticks = el('div', 'track');
  for (const tick of r.ticks) {
    const t = el('span', 'tick', tick.label);
    t.style.left = `${((tick.at - r.start) / (r.end - r.start)) * 100}%`;
    ticks.append(t);
  }
  head.append(el('div', 'label', 'Host'), ticks);
  grid.append(head);

  const cal = state.calendar;
  if (!cal) {
    $('summary').textContent = '';
    return;
  }
  const body = el('div', 'rows');
  let bookings = 0;
  for (const host of cal.hosts) {
    const row = el('div', host.reservable ? 'row host' : 'row host unreservable');
    row.dataset.label = host.label;
    if (host.id !== null && host.id !== undefined) row.dataset.hostId = host.id;
    const label = el('div', 'label', host.label);
    label.title = host.reservable ? host.label : `${host.label}: not reservable`;
    const track = el('div', 'track');
    for (const b of host.bookings) {
      const [s, e] = [parseDate(b.start_date), parseDate(b.end_date)];
      const name = b.lease_name ?? 'reserved';
      const bar = el('div', b.mine ? 'bar mine' : b.lease_name == null ? 'bar other' : 'bar', name);
      if (!place(bar, s, e, r)) continue;
      if (b.lease_id) {
        bar.dataset.leaseId = b.lease_id;
        bar.style.backgroundColor = leaseColour(b.lease_id);
      }
      bar.title = `${name}: ${formatDate(s)} – ${formatDate(e)} UTC${b.lease_id ? `\nlease ${b.lease_id}` : ''}`;
      track.append(bar);
      bookings += 1;
    }
    // Admins get each window's hosts: the window is marked on exactly those rows.
    for (const w of state.windows) {
      if (!w.hosts?.includes(host.id)) continue;
      const mark = el('div', w === state.picked ? 'slot picked' : 'slot');
      mark.title = `free: ${windowText(w)}`;
      if (place(mark, parseDate(w.start_date), parseDate(w.end_date), r)) track.append(mark);
    }
    row.append(label, track);
    body.append(row);
  }
  // Others only learn how many hosts are free: the window is a band across every row.
  const bands = el('div', 'bands');
  for (const w of state.windows) {
    if (w.hosts) continue;
    const band = el('div', w === state.picked ? 'band picked' : 'band');
    band.title = `${w.count} host(s) free: ${windowText(w)}`;
    if (place(band, parseDate(w.start_date), parseDate(w.end_date), r)) bands.append(band);
  }
  const now = el('div', 'now');
  now.title = `now: ${formatDate(Date.now())} UTC`;
  if (place(now, Date.now(), Date.now() + 1, r)) bands.append(now);
  body.append(bands);
  grid.append(body);

  const admin = cal.hosts.some((h) => h.id !== null && h.id !== undefined);
  $('summary').textContent = cal.hosts.length === 0
    ? 'No host matches the filters.'
    : `${cal.hosts.length} host(s), ${bookings} booking(s) in view. ` +
      (admin ? 'Admin view: host names and every lease.' : 'Project view: hosts are anonymous, ' +
        "other projects' leases show as “reserved”.");
}

async function loadCalendar() {
  const r = viewRange(state.view, state.anchor);
  saveToUrl();
  const seq = ++state.loads;
  const grid = $('grid');
  grid.dataset.state = 'loading';
  let data = null;
  let error = null;
  try {
    data = await api('GET', '/v1/os-hosts/calendar', {
      after: formatDate(r.start),
      before: formatDate(r.end),
      resource_properties: state.filters.resource,
      hypervisor_properties: state.filters.hypervisor,
    });
  } catch (e) {
    error = e;
  }
  if (seq !== state.loads) return; // a newer request is on its way
  state.calendar = data?.calendar ?? null;
  if (error) showError(error.message);
  else clearError();
  render();
  grid.dataset.state = error ? 'error' : 'ready';
  grid.dataset.loaded = String(seq); // for tests and tools: which request the grid shows
}

// ---- The URL: view, date and filters, so that a view can be linked to ---------------------------

function loadFromUrl() {
  const q = new URLSearchParams(location.search);
  if (VIEWS.includes(q.get('view'))) state.view = q.get('view');
  const date = parseDate(q.get('date'));
  if (!Number.isNaN(date)) state.anchor = date;
  state.filters.resource = q.get('resource_properties') ?? '';
  state.filters.hypervisor = q.get('hypervisor_properties') ?? '';
  $('resource-filter').value = state.filters.resource;
  $('hypervisor-filter').value = state.filters.hypervisor;
}

function saveToUrl() {
  const q = new URLSearchParams({ view: state.view, date: formatDate(state.anchor).slice(0, 10) });
  if (state.filters.resource) q.set('resource_properties', state.filters.resource);
  if (state.filters.hypervisor) q.set('hypervisor_properties', state.filters.hypervisor);
  history.replaceState(null, '', `${location.pathname}?${q}`);
}

// ---- Find a slot ------------------------------------------------------------------------------

function renderWindows() {
  const list = $('windows');
  list.replaceChildren();
  const names = new Map((state.calendar?.hosts ?? []).map((h) => [h.id, h.label]));
  for (const w of state.windows) {
    const hosts = w.hosts ? `: ${w.hosts.map((id) => names.get(id) ?? `host ${id}`).join(', ')}` : '';
    const button = el('button', 'window', `${windowText(w)} · ${w.count} host(s)${hosts}`);
    button.type = 'button';
    button.dataset.start = w.start_date;
    button.dataset.end = w.end_date;
    button.addEventListener('click', () => pickWindow(w));
    const item = el('li');
    item.append(button);
    list.append(item);
  }
}

async function findSlot(event) {
  event.preventDefault();
  const list = $('windows');
  list.dataset.state = 'loading';
  const slot = {
    min: $('slot-min').value.trim(),
    max: $('slot-max').value.trim(),
    filters: { ...state.filters },
  };
  try {
    const data = await api('GET', '/v1/os-hosts/availability', {
      min: slot.min,
      max: slot.max,
      duration: $('slot-duration').value,
      after: $('slot-after').value,
      resource_properties: slot.filters.resource,
      hypervisor_properties: slot.filters.hypervisor,
    });
    clearError();
    state.windows = data.windows;
    state.slot = slot;
  } catch (e) {
    showError(e.message);
    state.windows = [];
    list.dataset.state = 'error';
    renderWindows();
    render();
    return;
  }
  renderWindows();
  if (state.windows.length === 0) list.append(el('li', 'none', 'No window: not enough hosts are free for that long.'));
  const r = viewRange(state.view, state.anchor);
  const first = state.windows[0] && parseDate(state.windows[0].start_date);
  // The earliest window is the one to show: move there when it is out of view.
  if (first && !(first >= r.start && first < r.end)) {
    state.anchor = first;
    await loadCalendar();
  } else {
    render();
  }
  list.dataset.state = 'ready';
}

/** A window becomes the lease form's proposal: its dates, the hosts asked for, the filters used. */
function pickWindow(w) {
  const { min, max, filters } = state.slot;
  const start = parseDate(w.start_date);
  $('lease-name').value = `lease-${formatDate(start).replace(/[-: ]/g, '').slice(0, 12)}`;
  $('lease-start').value = formatDate(start);
  $('lease-end').value = formatDate(parseDate(w.end_date));
  $('lease-min').value = min;
  // With a most asked for, the window's count (capped at it); otherwise exactly the fewest.
  $('lease-max').value = max ? w.count : min;
  $('lease-resource').value = filters.resource;
  $('lease-hypervisor').value = filters.hypervisor;
  state.picked = w;
  [...document.querySelectorAll('#windows .window')].forEach((b, i) => b.classList.toggle('picked', state.windows[i] === w));
  render();
  $('lease-name').focus();
}

// ---- New lease --------------------------------------------------------------------------------

async function createLease(event) {
  event.preventDefault();
  const result = $('lease-result');
  result.dataset.state = 'loading';
  result.textContent = 'Creating…';
  delete result.dataset.leaseId;
  const body = {
    name: $('lease-name').value.trim(),
    start_date: $('lease-start').value.trim(),
    end_date: $('lease-end').value.trim(),
    reservations: [{
      resource_type: 'physical:host',
      min: Number($('lease-min').value),
      max: Number($('lease-max').value),
      hypervisor_properties: $('lease-hypervisor').value.trim(),
      resource_properties: $('lease-resource').value.trim(),
    }],
  };
  let lease;
  try {
    lease = (await api('POST', '/v1/leases', {}, body)).lease;
  } catch (e) {
    showError(e.message);
    result.textContent = `Not created: ${e.message}`;
    result.dataset.state = 'error';
    return;
  }
  clearError();
  result.textContent = `Created lease ${lease.name} (${lease.id}), status ${lease.status ?? 'unknown'}.`;
  result.dataset.leaseId = lease.id;
  result.dataset.status = lease.status ?? '';
  // The windows found before are stale now; the new lease is shown where it starts.
  state.windows = [];
  renderWindows();
  const start = parseDate(lease.start_date);
  const r = viewRange(state.view, state.anchor);
  if (!Number.isNaN(start) && !(start < r.end && parseDate(lease.end_date) > r.start)) state.anchor = start;
  await loadCalendar();
  result.dataset.state = 'ready';
}

// ---- Identity ---------------------------------------------------------------------------------

function showIdentity() {
  const who = identity();
  const parts = [];
  if (who.token) parts.push('Keystone token');
  if (who.project) parts.push(`project ${who.project}`);
  if (who.roles) parts.push(`roles ${who.roles}`);
  $('who').textContent = parts.length ? parts.join(', ') : 'server defaults';
  $('token').value = who.token;
  $('project-id').value = who.project;
  $('roles').value = who.roles;
}

function saveIdentity(values) {
  for (const [k, v] of Object.entries(values)) {
    if (v.trim()) sessionStorage.setItem(STORED[k], v.trim());
    else sessionStorage.removeItem(STORED[k]);
  }
  showIdentity();
  // Another caller sees other hosts and leases: nothing found for the last one still holds.
  state.windows = [];
  renderWindows();
  loadCalendar();
}

// ---- Wiring -----------------------------------------------------------------------------------

function start() {
  loadFromUrl();
  showIdentity();
  for (const b of document.querySelectorAll('[data-view]')) {
    b.addEventListener('click', () => {
      state.view = b.dataset.view;
      loadCalendar();
    });
  }
  $('prev').addEventListener('click', () => {
    state.anchor = shifted(state.view, state.anchor, -1);
    loadCalendar();
  });
  $('next').addEventListener('click', () => {
    state.anchor = shifted(state.view, state.anchor, 1);
    loadCalendar();
  });
  $('today').addEventListener('click', () => {
    state.anchor = Date.now();
    loadCalendar();
  });
  $('filter-form').addEventListener('submit', (event) => {
    event.preventDefault();
    state.filters = { resource: $('resource-filter').value.trim(), hypervisor: $('hypervisor-filter').value.trim() };
    loadCalendar();
  });
  $('slot-form').addEventListener('submit', findSlot);
  $('lease-form').addEventListener('submit', createLease);
  $('auth-form').addEventListener('submit', (event) => {
    event.preventDefault();
    saveIdentity({ token: $('token').value, project: $('project-id').value, roles: $('roles').value });
  });
  $('auth-clear').addEventListener('click', () => saveIdentity({ token: '', project: '', roles: '' }));
  loadCalendar();
}

start();
