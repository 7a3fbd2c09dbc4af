// Drives the status page of a running demo in headless Chromium (Debian's,
// through playwright-core from target/node); run by tests/status_browser.rs:
//   node tests/status_browser.js BASE_URL SCREENSHOT_DIR HOSTILE_ROOM
// Prints one line per check; exits 1 with the reason on the first failure.
const { chromium } = require('playwright-core');
const fs = require('fs');
const os = require('os');
const path = require('path');

const [base, shots, hostileRoom] = process.argv.slice(2);
const HOSTILE = '<script>alert(1)</script>';

function fail(message) {
  throw new Error(message);
}

function check(condition, message) {
  if (!condition) fail(message);
  console.log('ok: ' + message);
}

// Sample value of the exact series `series` in a Prometheus text body.
function metric(text, series) {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

// Per-room values of `family` by room_id.
function byRoom(text, family) {
  const out = new Map();
  const prefix = family + '{room_id="';
  for (const line of text.split('\n')) {
    if (!line.startsWith(prefix)) continue;
    const id = line.slice(prefix.length, line.indexOf('"', prefix.length));
    if (line.slice(line.indexOf('}') + 1).startsWith(' ')) out.set(id, Number(line.split(' ').pop()));
  }
  return out;
}

// What the summary cards should say, from /metrics.
function expected(metrics) {
  const members = byRoom(metrics, 'roomengine_room_members');
  const max = byRoom(metrics, 'roomengine_room_max_members');
  const exists = byRoom(metrics, 'roomengine_room_exists');
  const up = byRoom(metrics, 'roomengine_room_up');
  let full = 0;
  for (const [id, m] of members) {
    const cap = max.get(id) || 0;
    if (cap > 0 && m >= cap && exists.get(id) !== 0) full += 1;
  }
  const configured = metric(metrics, 'roomengine_rooms_configured');
  const discovered = metric(metrics, 'roomengine_rooms_discovered');
  return {
    known: configured + discovered,
    configured,
    discovered,
    full,
    up: [...up.values()].filter((v) => v === 1).length,
  };
}

async function cards(page) {
  const read = async (id) => Number((await page.textContent('#' + id)).trim());
  return {
    known: await read('rooms-known'),
    configured: await read('rooms-configured'),
    discovered: await read('rooms-discovered'),
    full: await read('rooms-full'),
    up: await read('rooms-up'),
  };
}

async function roomIds(page) {
  return page.$$eval('#room-table tbody tr td:first-child a', (as) => as.map((a) => a.textContent));
}

(async () => {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'status-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1400, height: 1000 },
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  try {
    const page = context.pages()[0] || (await context.newPage());
    const dialogs = [];
    page.on('dialog', (d) => {
      dialogs.push(d.message());
      d.dismiss();
    });
    const offsite = [];
    page.on('request', (r) => {
      if (!r.url().startsWith(base)) offsite.push(r.url());
    });

    // The summary against /metrics: rooms join and leave (churn), so retry
    // until one page load and the scrape right after it agree.
    let agreed = null;
    for (let attempt = 0; attempt < 10 && !agreed; attempt++) {
      await page.goto(base + '/');
      const shown = await cards(page);
      const metrics = await (await page.request.get(base + '/metrics')).text();
      const want = expected(metrics);
      if (JSON.stringify(shown) === JSON.stringify(want)) agreed = shown;
      else console.log('retry: page ' + JSON.stringify(shown) + ' /metrics ' + JSON.stringify(want));
    }
    check(agreed !== null, 'summary cards equal the /metrics figures');
    check(agreed.known >= 50, `${agreed.known} rooms known (50+)`);
    check(agreed.full >= 1, `${agreed.full} full rooms`);
    const rows = await roomIds(page);
    check(rows.length === Math.min(100, agreed.known), `${rows.length} rows on the first page`);
    fs.mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: path.join(shots, 'status.png'), fullPage: false });
    console.log('ok: screenshot ' + path.join(shots, 'status.png'));

    // A hostile room name from the API shows as text and runs nothing.
    await page.fill('input[name=q]', hostileRoom);
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    check(new URL(page.url()).searchParams.get('q') === hostileRoom, 'the filter is a GET parameter');
    const filtered = await roomIds(page);
    check(filtered.length >= 1 && filtered.every((id) => id.includes(hostileRoom)), `filter shows ${filtered.join(',')}`);
    const names = await page.$$eval('#room-table tbody tr td:nth-child(2)', (tds) => tds.map((t) => t.textContent));
    check(names.includes(HOSTILE), 'the hostile name is shown as text');
    check((await page.$$('#room-table script')).length === 0, 'no script element in the table');

    // "Full only": the checkbox submits the form (small JS); every row is full.
    await page.goto(base + '/');
    await Promise.all([page.waitForNavigation(), page.check('input[name=full]')]);
    check(new URL(page.url()).searchParams.get('full') === '1', 'full only is a GET parameter');
    const fullRows = await page.$$eval('#room-table tbody tr', (trs) => trs.map((tr) => tr.className));
    const fullCard = Number((await page.textContent('#rooms-full')).trim());
    check(fullRows.length === fullCard && fullRows.every((c) => c === 'full'), `${fullRows.length} rows, all full, = the full card`);
    const matching = (await page.textContent('#matching')).trim();
    check(matching.startsWith(`${fullCard} of `), `"${matching}"`);

    // Follow a room link to its page: fields with their source, events, series.
    const first = (await roomIds(page))[0];
    await Promise.all([page.waitForNavigation(), page.click('#room-table tbody tr:first-child td:first-child a')]);
    check(new URL(page.url()).pathname === '/rooms/' + first, 'the room link leads to /rooms/' + first);
    const series = await page.textContent('#series');
    check(series.includes(`roomengine_room_members{room_id="${first}"}`), 'the room page shows its series');
    const sources = await page.$$eval('#fields tbody tr td:nth-child(3)', (tds) => tds.map((t) => t.textContent));
    check(sources.length >= 10 && sources.every((s) => s === 'poll' || s.startsWith('callback')), `fields from: ${[...new Set(sources)].join(', ')}`);
    const events = await page.$$('#events tbody tr');
    check(events.length >= 1 && events.length <= 20, `${events.length} events (at most 20)`);
    await page.screenshot({ path: path.join(shots, 'room.png'), fullPage: true });
    console.log('ok: screenshot ' + path.join(shots, 'room.png'));

    check(dialogs.length === 0, 'no script ran from page data (no dialog)');
    check(offsite.length === 0, 'no request left the exporter: ' + offsite.join(' '));
    await page.close();
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }

  // With JavaScript off the form still filters (the Apply button).
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext({ javaScriptEnabled: false });
    const page = await context.newPage();
    await page.goto(base + '/');
    await page.check('input[name=full]');
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    const classes = await page.$$eval('#room-table tbody tr', (trs) => trs.map((tr) => tr.className));
    check(classes.length >= 1 && classes.every((c) => c === 'full'), `JS off: Apply filters to ${classes.length} full rooms`);
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error('FAILED: ' + e.message);
  process.exit(1);
});
