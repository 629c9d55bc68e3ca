// Browser test of the mission board, driven by playwright-core in Debian's
// Chromium. Started by tests/python/test_board_browser.py once a known set
// of events has reached the projections; it:
//   1. opens the opportunity mission page and reads every figure on it;
//   2. reads the same figures from the metrics API with a board token and
//      checks they agree (headline, each cohort month, each area);
//   3. checks that the small area's count is shown as suppressed, [c];
//   4. checks the index page shows the same headline;
//   5. saves screenshots under $BOARD_OUTPUT;
//   6. prints READY, waits for GO on stdin (the test then sends more
//      events), and checks the page refreshes itself in place (no reload)
//      to the new figures, which again agree with the API.
// Exits non-zero with the assertion that failed.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { createRequire } from 'node:module';

// playwright-core is installed in web/node_modules (deploy/local/setup).
const { chromium } = createRequire(new URL('../../web/package.json', import.meta.url))('playwright-core');

const base = process.env.BOARD_URL;
const token = process.env.BOARD_TOKEN;
const out = process.env.BOARD_OUTPUT;
const small = process.env.BOARD_SMALL_AREA;
const mission = 'opportunity';
const outcome = 'sustained_employment_180d';
assert.ok(base && token && out && small, 'BOARD_URL, BOARD_TOKEN, BOARD_OUTPUT and BOARD_SMALL_AREA must be set');
mkdirSync(out, { recursive: true });

async function api() {
  const r = await fetch(`${base}/v1/missions/${mission}/metrics`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(r.status, 200, `metrics API answered ${r.status}`);
  const body = await r.json();
  const groups = {};
  for (const by of ['area', 'cohort_month']) {
    const g = await fetch(`${base}/v1/missions/${mission}/metrics?group_by=${by}`, { headers: { Authorization: `Bearer ${token}` } });
    groups[by] = Object.fromEntries((await g.json()).groups.map((x) => [x.key, x]));
  }
  return { body, groups };
}

// How the board writes a published count and a rate.
const count = (c) => (c.suppressed ? '[c]' : Number(c.value).toLocaleString('en-GB'));
const rate = (r) => (r.withheld ? '[c]' : r.value === null ? '–' : `${(r.value * 100).toFixed(1)}%`);

// The visible text of a figure, without the visually hidden explanation.
async function figure(locator) {
  return (await locator.evaluate((el) => {
    const c = el.cloneNode(true);
    c.querySelectorAll('.govuk-visually-hidden').forEach((h) => h.remove());
    return c.textContent;
  })).trim();
}

async function checkMissionPage(page, expected) {
  const figures = page.locator('#figures');
  assert.equal(await figure(figures.locator('[data-field="cohort"]').first()), count(expected.body.total.cohort), 'cohort');
  const o = figures.locator(`section[data-outcome="${outcome}"]`);
  const t = expected.body.total.outcomes[outcome];
  assert.equal(await figure(o.locator('p[data-field="rate"]')), rate(t.rate), 'headline rate');
  assert.equal(await figure(o.locator('span[data-field="achieved"]')), count(t.achieved), 'achieved');
  assert.equal(await figure(o.locator('span[data-field="not_achieved"]')), count(t.not_achieved), 'not achieved');
  assert.equal(await figure(o.locator('span[data-field="pending"]')), count(t.pending), 'provisional');
  for (const [kind, groups] of Object.entries(expected.groups)) {
    const rows = o.locator(`table[data-table="${kind}"] tbody tr`);
    const keys = await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.key));
    const expectedKeys = Object.keys(groups).filter((k) => kind === 'area' || k !== 'unknown');
    assert.deepEqual(keys.sort(), expectedKeys.sort(), `${kind} rows`);
    for (const key of keys) {
      const row = o.locator(`table[data-table="${kind}"] tbody tr[data-key="${key}"]`);
      const g = groups[key];
      const go = g.outcomes[outcome];
      assert.equal(await figure(row.locator('[data-field="cohort"]')), count(g.cohort), `${kind} ${key} cohort`);
      assert.equal(await figure(row.locator('[data-field="achieved"]')), count(go.achieved), `${kind} ${key} achieved`);
      assert.equal(await figure(row.locator('[data-field="not_achieved"]')), count(go.not_achieved), `${kind} ${key} not achieved`);
      assert.equal(await figure(row.locator('[data-field="pending"]')), count(go.pending), `${kind} ${key} provisional`);
      assert.equal(await figure(row.locator('[data-field="rate"]')), rate(go.rate), `${kind} ${key} rate`);
    }
  }
  // The NEET snapshot: headline and every area row, as in the API.
  const neet = expected.body.snapshots.neet;
  assert.ok(neet && neet.population.value > 0, 'the events give a NEET population');
  const s = figures.locator('section[data-snapshot="neet"]');
  assert.equal(await figure(s.locator('p[data-field="rate"]')), rate(neet.rate), 'NEET rate');
  assert.equal(await figure(s.locator('p[data-field="count"]')), count(neet.count), 'NEET count');
  assert.equal(await figure(s.locator('span[data-field="population"]')), count(neet.population), 'NEET population');
  const neetRows = s.locator('table[data-table="snapshot-area"] tbody tr');
  const neetKeys = await neetRows.evaluateAll((trs) => trs.map((tr) => tr.dataset.key));
  assert.deepEqual(neetKeys.sort(), neet.by_area.map((g) => g.key).sort(), 'NEET area rows');
  for (const g of neet.by_area) {
    const row = s.locator(`tbody tr[data-key="${g.key}"]`);
    assert.equal(await figure(row.locator('[data-field="population"]')), count(g.population), `NEET ${g.key} population`);
    assert.equal(await figure(row.locator('[data-field="count"]')), count(g.count), `NEET ${g.key} count`);
    assert.equal(await figure(row.locator('[data-field="rate"]')), rate(g.rate), `NEET ${g.key} rate`);
  }
}

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const before = await api();

  const response = await page.goto(`${base}/missions/${mission}?refresh=2`);
  assert.equal(response.status(), 200);
  assert.equal(await page.locator('h1').textContent(), before.body.title, 'page title is the mission title');
  const css = await page.evaluate(() => getComputedStyle(document.querySelector('.govuk-header')).backgroundColor);
  assert.equal(css, 'rgb(29, 112, 184)', 'GOV.UK Frontend stylesheet applied (brand blue header)');
  assert.ok(await page.evaluate(() => document.body.classList.contains('govuk-frontend-supported')), 'GOV.UK Frontend initialised');
  await checkMissionPage(page, before);

  // The small area: suppressed on the page and in the API, never a number.
  const smallRow = page.locator(`section[data-outcome="${outcome}"] table[data-table="area"] tr[data-key="${small}"]`);
  assert.equal(await smallRow.locator('[data-field="cohort"] [data-suppressed="true"]').count(), 1, `${small} cohort shown as suppressed`);
  assert.equal(await figure(smallRow.locator('[data-field="cohort"]')), '[c]');
  assert.equal(before.groups.area[small].cohort.suppressed, true, 'the API suppresses it too');
  assert.equal(await figure(smallRow.locator('[data-field="rate"]')), '[c]', 'its rate is withheld');
  // Charts are images with a text alternative; the table carries the figures.
  assert.ok(await page.locator('svg.app-chart[role="img"] title').count() >= 2, 'charts have text alternatives');
  await page.screenshot({ path: `${out}/opportunity.png`, fullPage: true });

  // The index shows the same headline.
  const index = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  await index.goto(`${base}/`);
  const card = index.locator(`[data-mission="${mission}"]`);
  assert.equal(await figure(card.locator('[data-field="cohort"]')), count(before.body.total.cohort), 'index cohort');
  assert.equal(await figure(card.locator(`[data-outcome="${outcome}"] [data-field="rate"]`)), rate(before.body.total.outcomes[outcome].rate), 'index rate');
  assert.equal(await figure(card.locator('[data-snapshot="neet"] [data-field="rate"]')), rate(before.body.snapshots.neet.rate), 'index NEET rate');
  await index.screenshot({ path: `${out}/index.png`, fullPage: true });

  // Without JavaScript the tables are all there.
  const nojs = await browser.newContext({ javaScriptEnabled: false });
  const plain = await nojs.newPage();
  await plain.goto(`${base}/missions/${mission}`);
  assert.ok(await plain.locator(`table[data-table="area"] tr[data-key="${small}"]`).count() === 1, 'tables without JavaScript');
  await nojs.close();

  // In-place refresh: mark the document, let the test send more events,
  // and wait for the figures to change without a navigation.
  await page.evaluate(() => { window.__joineryMarker = 'same document'; });
  const cohortBefore = await figure(page.locator('#figures [data-field="cohort"]').first());
  console.log('READY');
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) if (line.trim() === 'GO') break;
  let after;
  const deadline = Date.now() + 60_000;
  for (;;) {
    after = await api();
    const shown = await figure(page.locator('#figures [data-field="cohort"]').first());
    if (shown !== cohortBefore && shown === count(after.body.total.cohort)) break;
    assert.ok(Date.now() < deadline, `the page did not refresh to the new figures within 60 s (shows ${shown}, API ${count(after.body.total.cohort)})`);
    await page.waitForTimeout(500);
  }
  await page.waitForTimeout(2500); // one more refresh cycle, so page and API settle together
  after = await api();
  assert.equal(await page.evaluate(() => window.__joineryMarker), 'same document', 'refreshed in place, not reloaded');
  assert.match(await page.locator('#refresh-status').textContent(), /Figures (updated at|refresh every)/);
  await checkMissionPage(page, after);
  await page.screenshot({ path: `${out}/opportunity-refreshed.png`, fullPage: true });
  console.log(`OK screenshots in ${out}`);
} finally {
  await browser.close();
}
