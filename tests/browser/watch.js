// Opens an onair listener page in headless Chromium, presses play and
// reports the page's player state every half second for as long as the test
// wants: a `sample={json}` line per reading, until stdin closes (the test is
// done) or --seconds pass. Run by tests/outage_browser.rs, which breaks the
// store under the broadcast meanwhile and makes the assertions; this script
// only acts and reports.
//
// node watch.js --page URL --user-data-dir DIR [--seconds 120]
//
// Each sample: seconds since play was pressed (`t`), the page's
// `window.onairPlayer` fields (state, currentTime, latency, dateLatency,
// liveJumps, reconnects), the status line, whether the <audio> element is
// paused, its buffered ranges (`buffered`, as `start-end,…`), `loads` (main-frame loads of the page so far) and `mark` (a value
// set in the page once loaded: a reload would lose it). At the end it prints
// the player errors and warnings and the script errors the page threw.
// With WATCH_REQUESTS set it also prints every request of the page to
// stderr, with its time, status and URL (to see what a player fetched).
'use strict';

const { chromium } = require('playwright-core');
const { randomUUID } = require('node:crypto');

// The flags listen.js uses.
const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];
const SAMPLE_MS = 500;

function parseArgs(argv) {
  const args = { seconds: 120 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    args[key] = argv[i + 1];
  }
  for (const required of ['page', 'userDataDir']) {
    if (!args[required]) throw new Error(`missing --${required}`);
  }
  args.seconds = Number(args.seconds);
  return args;
}

function emit(key, value) {
  const text = Array.isArray(value) ? value.join(' | ') : String(value);
  console.log(`${key}=${text.replace(/[\r\n]+/g, ' ')}`);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  let done = false;
  process.stdin.on('end', () => { done = true; });
  process.stdin.on('error', () => { done = true; });
  process.stdin.resume();
  const deadline = Date.now() + args.seconds * 1000;

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    ignoreDefaultArgs: true,
    args: [...CHROMIUM_FLAGS, `--user-data-dir=${args.userDataDir}`, '--remote-debugging-pipe'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 480, height: 640 } });
    const pageErrors = [];
    let loads = 0;
    page.on('pageerror', (error) => pageErrors.push(error.message));
    page.on('load', () => { loads++; });
    emit('browser', browser.version());
    if (process.env.WATCH_REQUESTS) {
      const t0 = Date.now();
      const at = () => ((Date.now() - t0) / 1000).toFixed(2);
      page.on('request', (r) => console.error(`request ${at()} ${r.url()}`));
      page.on('requestfinished', async (r) => {
        const response = await r.response();
        console.error(`finished ${at()} ${response && response.status()} ${r.url()}`);
      });
      page.on('requestfailed', (r) => {
        console.error(`failed ${at()} ${r.failure() && r.failure().errorText} ${r.url()}`);
      });
    }

    await page.goto(args.page);
    const mark = randomUUID();
    await page.evaluate((value) => { window.onairTestMark = value; }, mark);
    emit('mark', mark);
    await page.getByRole('button', { name: 'Play' }).click();
    const pressed = Date.now();

    while (!done && Date.now() < deadline) {
      await page.waitForTimeout(SAMPLE_MS);
      const sample = await page.evaluate(() => {
        const p = window.onairPlayer;
        return {
          state: p.state,
          currentTime: p.currentTime,
          latency: p.latency,
          dateLatency: p.dateLatency,
          liveJumps: p.liveJumps,
          buffered: (() => {
            const ranges = document.getElementById('audio').buffered;
            const text = [];
            for (let i = 0; i < ranges.length; i++) {
              text.push(ranges.start(i).toFixed(2) + '-' + ranges.end(i).toFixed(2));
            }
            return text.join(',');
          })(),
          reconnects: p.reconnects,
          status: document.getElementById('status').textContent,
          paused: document.getElementById('audio').paused,
          mark: window.onairTestMark === undefined ? null : window.onairTestMark,
        };
      });
      sample.t = (Date.now() - pressed) / 1000;
      sample.loads = loads;
      emit('sample', JSON.stringify(sample));
    }
    const player = await page.evaluate(() => ({ ...window.onairPlayer }));
    emit('player_errors', player.errors);
    emit('warnings', player.warnings);
    emit('page_errors', pageErrors);
  } finally {
    await browser.close();
  }
}

main().then(() => process.exit(0), (error) => {
  console.error(`watch.js: ${error.stack || error}`);
  process.exit(1);
});
