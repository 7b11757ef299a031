// End-to-end check of the dxtrace web UI in Debian's headless Chromium.
//
//   DXTRACE_URL=http://127.0.0.1:PORT/ OUT_DIR=../../test-output node ui.spec.mjs
//
// Opens the library, opens a trace, checks the timeline canvas drew (pixels are not
// blank), zooms, clicks a span and waits for the decoded ioctl name in the detail panel;
// then replays an emulator recording from its replay page and follows the divergence
// report to the divergent call. Screenshots go to OUT_DIR. Exits non-zero with a message
// on the first failed check.
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const base = process.env.DXTRACE_URL;
const out = process.env.OUT_DIR || 'test-output';
const exe = process.env.CHROMIUM || '/usr/bin/chromium';
if (!base) { console.error('DXTRACE_URL is not set'); process.exit(2); }
mkdirSync(out, { recursive: true });

function check(cond, msg) {
  if (!cond) throw new Error('check failed: ' + msg);
  console.log('ok - ' + msg);
}

const profile = mkdtempSync(join(tmpdir(), 'dxtrace-chromium-'));
// a fresh profile each run: playwright takes it as the persistent context's directory
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: exe,
  headless: true,
  viewport: { width: 1400, height: 900 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
let failed = false;
const page = browser.pages()[0] || await browser.newPage();
const errors = [];
page.on('pageerror', e => errors.push(String(e)));
try {
  // library
  await page.goto(base, { waitUntil: 'load' });
  const links = page.locator('a.trace-link');
  check(await links.count() > 1, 'library lists the traces');
  await page.screenshot({ path: join(out, 'web-1-library.png'), fullPage: true });

  // overview
  await page.locator('a.trace-link', { hasText: 'browser.dxtrace' }).click();
  await page.waitForSelector('#ioctls');
  check((await page.locator('#ioctls tbody tr').count()) > 0, 'overview lists ioctls by name');
  await page.screenshot({ path: join(out, 'web-2-overview.png'), fullPage: true });

  // timeline
  await page.click('nav a:has-text("Timeline")');
  await page.waitForFunction(() => window.dxtrace && window.dxtrace.loads > 0 && window.dxtrace.rects().length > 0,
    null, { timeout: 20000 });
  const inked = await page.evaluate(() => {
    const c = document.getElementById('timeline');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235) n++;
    return n / (d.length / 4);
  });
  check(inked > 0.02, `timeline canvas drew (${(inked * 100).toFixed(1)}% of pixels inked)`);
  await page.screenshot({ path: join(out, 'web-3-timeline.png'), fullPage: true });

  // zoom in with the mouse wheel until the lanes show single spans
  const box = await page.locator('#timeline').boundingBox();
  const w0 = await page.evaluate(() => window.dxtrace.st.t1 - window.dxtrace.st.t0);
  await page.mouse.move(box.x + 400, box.y + 200);
  // zoom step by step until ioctl lanes switch from summaries to single spans
  const spansShown = () => page.evaluate(() => {
    const d = window.dxtrace.st.data;
    return !!d && d.lanes.some(l => l.kind.kind === 'ioctl' && l.mode === 'spans' && l.spans.length > 0);
  });
  for (let k = 0; k < 60 && !(await spansShown()); k++) {
    await page.mouse.wheel(0, -300);
    await page.waitForTimeout(150);
  }
  // and a little further so spans are wide enough to hit
  for (let k = 0; k < 6; k++) { await page.mouse.wheel(0, -300); await page.waitForTimeout(100); }
  await page.waitForFunction(() => {
    const d = window.dxtrace.st.data;
    return d && d.lanes.some(l => l.mode === 'spans' && l.spans.length > 0);
  }, null, { timeout: 20000 });
  // let the last debounced tile load land, so what is drawn is what will be clicked
  await page.waitForFunction(() => window.dxtrace.idle(), null, { timeout: 20000 });
  await page.waitForTimeout(200);
  await page.waitForFunction(() => window.dxtrace.idle(), null, { timeout: 20000 });
  const w1 = await page.evaluate(() => window.dxtrace.st.t1 - window.dxtrace.st.t0);
  check(w1 < w0 / 3, `wheel zoomed in (${w0} ns → ${w1} ns)`);
  check(new URL(page.url()).searchParams.has('t0'), 'URL carries the time window');
  await page.screenshot({ path: join(out, 'web-4-zoomed.png'), fullPage: true });

  // click the widest ioctl span on screen
  const target = await page.evaluate(() => {
    const rs = window.dxtrace.rects().filter(r => !r.n && r.name && r.name.startsWith('LX_'));
    rs.sort((a, b) => b.w - a.w);
    return rs[0] || null;
  });
  check(target !== null, 'a single ioctl span is drawn');
  // click inside the part of the span that is on screen (it may start left of the plot)
  const x0 = Math.max(target.x, 175), x1 = Math.min(target.x + target.w, box.width - 2);
  const cx = (x0 + x1) / 2, cy = target.y + target.h / 2;
  const expected = await page.evaluate(([x, y]) => window.dxtrace.hit(x, y), [cx, cy]);
  check(expected && expected.name.startsWith('LX_'), `an ioctl span is under the pointer (${expected && expected.name})`);
  await page.mouse.click(box.x + cx, box.y + cy);
  await page.waitForSelector('#detail-name', { timeout: 20000 });
  const name = await page.textContent('#detail-name');
  // spans of one thread can overlap (nested or concurrent calls): the page picks the
  // narrowest under the pointer; the detail must be that span's decoded name
  const picked = await page.evaluate(() => window.dxtrace.lastHit);
  check(picked && picked.name.startsWith('LX_'), `the click picked an ioctl span (${picked && picked.name})`);
  check(name === picked.name, `detail shows the decoded ioctl name (${name})`);
  check((await page.locator('#detail table.tree tr').count()) > 2, 'detail shows the decoded struct tree');
  check(new URL(page.url()).searchParams.get('ev') === `${picked.lane}:${picked.i}`, 'URL carries the selected event');
  await page.screenshot({ path: join(out, 'web-5-detail.png'), fullPage: true });

  // deep link reopens the same selection
  await page.goto(page.url());
  await page.waitForSelector('#detail-name', { timeout: 20000 });
  check(await page.textContent('#detail-name') === name, 'deep link restores the selection');

  // replay an emulator recording from its page: its last recorded return value was
  // altered, so exactly one call diverges
  await page.goto(base, { waitUntil: 'load' });
  await page.locator('a.trace-link', { hasText: 'emu-altered.dxtrace' }).click();
  await page.waitForSelector('#ioctls');
  await page.click('nav a:has-text("Replay")');
  await page.waitForSelector('#replay-run');
  check((await page.textContent('#replay-summary')).includes('not been replayed'), 'replay page says it has not run yet');
  await page.click('#replay-run');
  await page.waitForSelector('#divergences, #replay-clean, #replay-error', { timeout: 60000 });
  const summary = await page.textContent('#replay-summary');
  check(summary.includes('replayed against the emulator') && summary.includes('1 divergence.'),
    `the replay ran and reported one divergence (${summary.trim()})`);
  const row = page.locator('#divergences tbody tr').first();
  const divName = (await row.locator('td').nth(1).textContent()).trim();
  check(divName.startsWith('LX_DX'), `the divergent call is named (${divName})`);
  check((await row.locator('td').nth(2).textContent()).trim() === 'return', 'the divergent field is the return value');
  await page.screenshot({ path: join(out, 'web-6-replay.png'), fullPage: true });
  await row.locator('td a').first().click();
  await page.waitForSelector('#event-name');
  check((await page.textContent('#event-name')).includes(divName), 'the divergence links to the recorded call');
  check(errors.length === 0, 'no JavaScript errors: ' + errors.join('; '));
} catch (e) {
  failed = true;
  console.error(String(e && e.stack || e));
  await page.screenshot({ path: join(out, 'web-failure.png'), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
