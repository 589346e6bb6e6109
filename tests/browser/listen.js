// Opens an onair listener page in headless Chromium, presses play and
// measures what a listener would get. Run by tests/browser.rs, which makes
// the assertions; this script only measures and prints `key=value` lines.
//
// node listen.js --page URL --user-data-dir DIR [--index URL --stream NAME]
//                [--seconds 5.5] [--screenshot FILE.png]
//                [--host-rules "MAP onair.test 127.0.0.1" --spki BASE64]
//
// Measures: the player kind the page used, how far currentTime advanced,
// the RMS level and the strongest frequency of what the page plays (a WebAudio
// analyser on the page's <audio> element: createMediaElementSource ->
// AnalyserNode), the page's latency readout, and every error the page showed,
// threw or logged. Exits non-zero only when it could not measure at all.
'use strict';

const { chromium } = require('playwright-core');

// The flags the issue prescribes, plus what this script adds below: a fresh
// profile and the pipe playwright-core talks to the browser over.
const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];
/** Chromium flags for a page on a name with a test certificate:
 * `--host-rules "MAP onair.test 127.0.0.1"` resolves the name, and
 * `--spki BASE64` trusts the certificate whose public key hashes to it. */
function tlsFlags(args) {
  const flags = [];
  if (args.hostRules) flags.push(`--host-resolver-rules=${args.hostRules}`);
  if (args.spki) flags.push(`--ignore-certificate-errors-spki-list=${args.spki}`);
  return flags;
}

/** Give up on a run that has not finished after this long. */
const DEADLINE_MS = 60_000;
/** How long to wait for playback to start once play is pressed. */
const START_TIMEOUT_MS = 25_000;

function parseArgs(argv) {
  const args = { seconds: 5.5 };
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

const median = (values) => {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

// Checks that the index page links to the stream's listener page.
async function checkIndex(page, indexUrl, stream) {
  await page.goto(indexUrl);
  const link = page.getByRole('link', { name: stream, exact: true });
  emit('index_links', await link.count());
  if (await link.count() === 1) {
    emit('index_target', new URL(await link.getAttribute('href'), indexUrl).href);
  }
}

// Runs in the page: routes the <audio> element through an analyser and
// samples it every 100 ms, with the player's currentTime at that moment.
function installAnalyser() {
  const audio = document.querySelector('audio');
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  analyser.fftSize = 4096;
  context.createMediaElementSource(audio).connect(analyser);
  analyser.connect(context.destination);
  const samples = new Float32Array(analyser.fftSize);
  const probe = { rms: [], sampleRate: context.sampleRate, fftSize: analyser.fftSize, analyser };
  window.onairProbe = probe;
  setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    probe.rms.push({ time: audio.currentTime, rms: Math.sqrt(sum / samples.length) });
  }, 100);
  // The context may start suspended until a gesture; the play click is one.
  document.getElementById('play').addEventListener('click', () => context.resume());
}

// Runs in the page: the frequency (Hz) of the analyser's strongest bin.
function peakFrequency() {
  const { analyser, sampleRate, fftSize } = window.onairProbe;
  const spectrum = new Float32Array(analyser.frequencyBinCount);
  analyser.getFloatFrequencyData(spectrum);
  let best = 1;
  for (let i = 1; i < spectrum.length; i++) if (spectrum[i] > spectrum[best]) best = i;
  return (best * sampleRate) / fftSize;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    ignoreDefaultArgs: true,
    args: [...CHROMIUM_FLAGS, ...tlsFlags(args), `--user-data-dir=${args.userDataDir}`, '--remote-debugging-pipe'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 480, height: 640 } });
    const pageErrors = [];
    const consoleErrors = [];
    page.on('pageerror', (error) => pageErrors.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push(message.text());
    });
    emit('browser', browser.version());

    if (args.index) await checkIndex(page, args.index, args.stream);

    await page.goto(args.page);
    await page.evaluate(installAnalyser);
    await page.getByRole('button', { name: 'Play' }).click();
    const player = () => page.evaluate(() => ({ ...window.onairPlayer }));

    const pressed = Date.now();
    // Playing, or failed for good: either way there is something to report.
    await page.waitForFunction(
      () => window.onairPlayer.currentTime > 0 || window.onairPlayer.state === 'failed',
      null, { timeout: START_TIMEOUT_MS, polling: 100 }).catch(() => {});
    const started = await player();
    emit('start_s', ((Date.now() - pressed) / 1000).toFixed(2));

    const latencies = [];
    const dateLatencies = [];
    let state = started;
    const until = Date.now() + (args.seconds + 4) * 1000;
    while (started.currentTime > 0 && Date.now() < until) {
      await page.waitForTimeout(500);
      state = await player();
      if (state.latency !== null) latencies.push(state.latency);
      if (state.dateLatency !== null) dateLatencies.push(state.dateLatency);
      if (state.currentTime - started.currentTime >= args.seconds) break;
    }

    // Only what the analyser heard after playback had started counts.
    const rms = (await page.evaluate(() => window.onairProbe.rms))
      .filter((sample) => sample.time > started.currentTime)
      .map((sample) => sample.rms);
    emit('kind', state.kind);
    emit('state', state.state);
    emit('advance_s', (state.currentTime - started.currentTime).toFixed(3));
    emit('rms_samples', rms.length);
    emit('rms_median', median(rms).toFixed(4));
    emit('rms_min', (rms.length ? Math.min(...rms) : NaN).toFixed(4));
    emit('peak_hz', (await page.evaluate(peakFrequency)).toFixed(1));
    emit('latency_s', median(latencies).toFixed(3));
    emit('date_latency_s', median(dateLatencies).toFixed(3));
    emit('latency_text', await page.locator('#latency').textContent());
    emit('status_text', await page.locator('#status').textContent());
    emit('reconnects', state.reconnects);
    emit('player_errors', state.errors);
    emit('player_error_count', state.errors.length);
    emit('warnings', state.warnings.length);
    emit('page_errors', pageErrors);
    emit('page_error_count', pageErrors.length);
    emit('console_errors', consoleErrors);
    if (args.screenshot) {
      await page.screenshot({ path: args.screenshot });
      emit('screenshot', args.screenshot);
    }
  } finally {
    await browser.close();
  }
}

setTimeout(() => {
  console.error(`listen.js: no result after ${DEADLINE_MS / 1000} s`);
  process.exit(2);
}, DEADLINE_MS).unref();

main().catch((error) => {
  console.error(`listen.js: ${error.stack || error}`);
  process.exit(1);
});
