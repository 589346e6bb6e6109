// Opens an onair host studio page in headless Chromium with a fake
// microphone (a WAV file), goes on air over WHIP and reports what the host
// would see. Run by tests/whip_browser.rs, which makes the assertions; this
// script only acts and measures, and prints `key=value` lines.
//
// node host.js --page URL --user-data-dir DIR --audio-file FILE.wav
//              [--token KEY] [--seconds 8] [--mute-at S --unmute-at S]
//              [--on-air-timeout 20] [--screenshot FILE.png]
//              [--host-rules "MAP onair.test 127.0.0.1" --spki BASE64]
//              [--relay-only 1]
//              [--measure-return OWN_HZ,OTHER_HZ [--room-hosts N]
//               [--measure-seconds 4] [--measured-file FILE]
//               [--stay-until-file FILE] [--then-speakers 1]]
//
// With --token, the key is typed into the page's "Host key" field and
// "Go on air" pressed, as a person does; without it the page URL must carry
// `#token=KEY&start=1` and start by itself. Once on air (or failed), it
// stays --seconds, toggles the mute switch at --mute-at and --unmute-at
// seconds after going on air, then presses "Go off air". Times are reported
// as wall-clock milliseconds since the epoch (`*_ms`), for the test to place
// them on the broadcast's clock. `whip_requests` is what the browser's
// network log saw (a cross-origin DELETE shows there as aborted even when
// it was answered), `delete_status` what the page's fetch got. `ice_*` is
// the candidate pair the page's connection selected (RTCStats), read while
// on air: which transport carried the media. --relay-only forces every
// RTCPeerConnection the page makes to `iceTransportPolicy: "relay"`, as a
// network where only a TURN server is reachable would.
//
// --measure-return measures, once on air, what the host hears: the return
// the page plays, read in the page's own Web Audio graph (an AnalyserNode
// on `window.onairReturn`). It waits for the return to play, for the room
// list to show --room-hosts hosts on air, and for the OTHER_HZ tone to
// arrive in the return, then reads --measure-seconds of frames and reports
// the levels at both tones (Goertzel on Hann-windowed frames, RMS dBFS:
// `return_own_dbfs`, `return_other_dbfs`, medians, and their spread) and
// what the room list displayed (`room_text`). Then it writes
// --measured-file and stays on air until --stay-until-file exists (another
// page's --measured-file: two pages keep each other on air until both have
// measured). --then-speakers then picks "Speakers" and reports the
// microphone swapped in (`speakers_*`). `off_air_room*` and
// `off_air_hearing` are the room list and the return once off air. Exits non-zero only when it could
// not run.
'use strict';

const fs = require('fs');
const { chromium } = require('playwright-core');

// As listen.js, plus a fake microphone playing --audio-file in a loop, an
// automatic "allow" for it, and WebRTC over the loopback interface (which
// Chromium leaves out of ICE candidates otherwise).
const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
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
/** How often the page's state is sampled. */
const SAMPLE_MS = 100;
/** The return's measurement: frame length in samples (170 ms at 48 kHz),
 * how often a frame is read, the level at which the other host's tone has
 * arrived, and how long to wait for each state before reporting without. */
const RETURN_FRAME = 8192;
const RETURN_READ_MS = 200;
const RETURN_ARRIVED_DBFS = -40;
const RETURN_WAIT_MS = 20_000;

function parseArgs(argv) {
  const args = { seconds: 8, onAirTimeout: 20 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    args[key] = argv[i + 1];
  }
  for (const required of ['page', 'userDataDir', 'audioFile']) {
    if (!args[required]) throw new Error(`missing --${required}`);
  }
  args.measureSeconds = args.measureSeconds ?? 4;
  args.roomHosts = args.roomHosts ?? 1;
  for (const number of ['seconds', 'onAirTimeout', 'muteAt', 'unmuteAt', 'measureSeconds', 'roomHosts']) {
    if (args[number] !== undefined) args[number] = Number(args[number]);
  }
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

// The WHIP requests the page made and how each ended (the status, or
// `failed`), in order. Every request ends in exactly one of these events.
function recordWhip(page) {
  const exchanges = [];
  const isWhip = (request) => new URL(request.url()).pathname.includes('/whip');
  page.on('requestfinished', async (request) => {
    if (!isWhip(request)) return;
    const response = await request.response();
    exchanges.push({ method: request.method(), status: response ? response.status() : 'none' });
  });
  page.on('requestfailed', (request) => {
    if (!isWhip(request)) return;
    const failure = request.failure();
    exchanges.push({ method: request.method(), status: `failed (${failure ? failure.errorText : '?'})` });
  });
  return exchanges;
}

/** Runs in the page before its scripts: keeps every RTCPeerConnection it
 * makes (and the ICE servers it was given), forcing relay-only when asked. */
function watchPeerConnections({ relayOnly }) {
  const Native = window.RTCPeerConnection;
  window.__onairPeerConnections = [];
  window.RTCPeerConnection = function RTCPeerConnection(config = {}) {
    const effective = relayOnly ? { ...config, iceTransportPolicy: 'relay' } : config;
    window.__onairIceServers = effective.iceServers || [];
    const pc = new Native(effective);
    window.__onairPeerConnections.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
  Object.setPrototypeOf(window.RTCPeerConnection, Native);
}

/** The selected candidate pair of the page's latest connection: local and
 * remote protocol and candidate type (`relay` for a TURN allocation). */
async function selectedPair() {
  const pcs = window.__onairPeerConnections || [];
  const pc = pcs[pcs.length - 1];
  if (!pc) return { selected: 'none' };
  const stats = await pc.getStats();
  let pairId = null;
  stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId; });
  const pair = pairId && stats.get(pairId);
  if (!pair) return { selected: 'none' };
  const local = stats.get(pair.localCandidateId) || {};
  const remote = stats.get(pair.remoteCandidateId) || {};
  return {
    selected: pair.state,
    local_protocol: local.protocol,
    local_type: local.candidateType,
    local_relay_protocol: local.relayProtocol || 'none',
    remote_protocol: remote.protocol,
    remote_type: remote.candidateType,
    remote_port: remote.port,
  };
}

/** Runs in the page: taps the return's source node with an analyser. */
function installReturnProbe(frame) {
  const source = window.onairReturn;
  if (!source) return false;
  const analyser = source.context.createAnalyser();
  analyser.fftSize = frame;
  source.connect(analyser);
  window.__onairProbe = { source, analyser, samples: new Float32Array(frame) };
  return true;
}

/** Runs in the page: the latest frame of the return, as RMS dBFS at each of
 * `tones` (Goertzel over a Hann window: a sine of RMS r gives |X| =
 * r·√2·N/4) and overall; null if the return changed since the probe. */
function readReturnProbe(tones) {
  const probe = window.__onairProbe;
  if (!probe || probe.source !== window.onairReturn) return null;
  const x = probe.samples;
  probe.analyser.getFloatTimeDomainData(x);
  const n = x.length;
  const rate = probe.analyser.context.sampleRate;
  const db = (rms) => 20 * Math.log10(Math.max(rms, 1e-10));
  let sum = 0;
  for (const v of x) sum += v * v;
  const levels = tones.map((hz) => {
    const c = 2 * Math.cos((2 * Math.PI * hz) / rate);
    let s1 = 0;
    let s2 = 0;
    for (let i = 0; i < n; i++) {
      const s0 = x[i] * (0.5 - 0.5 * Math.cos((2 * Math.PI * i) / n)) + c * s1 - s2;
      s2 = s1;
      s1 = s0;
    }
    const magnitude = Math.sqrt(Math.max(s1 * s1 + s2 * s2 - c * s1 * s2, 0));
    return db((4 * magnitude) / (n * Math.SQRT2));
  });
  return { levels, rms: db(Math.sqrt(sum / n)), time: probe.analyser.context.currentTime };
}

/** What the room list shows, one host per entry. */
async function roomText(page) {
  return (await page.locator('#room li').allTextContents()).map((t) => t.replace(/\s+/g, ' ').trim());
}

/** --measure-return: see the top of this file. */
async function measureReturn(page, args) {
  const [own, other] = args.measureReturn.split(',').map(Number);
  const until = (fn, arg) => page.waitForFunction(fn, arg, { timeout: RETURN_WAIT_MS, polling: 100 })
    .then(() => true, () => false);
  emit('return_playing', await until(() => window.onairReturn !== null));
  emit('room_seen', await until((n) => (window.onairHost.room || [])
    .filter((h) => h.state === 'on-air').length >= n, args.roomHosts));
  if (!await page.evaluate(installReturnProbe, RETURN_FRAME)) return;
  const read = () => page.evaluate(readReturnProbe, [own, other]);
  const arriveBy = Date.now() + RETURN_WAIT_MS;
  let frame = null;
  do {
    await page.waitForTimeout(RETURN_READ_MS);
    frame = await read();
  } while (frame && frame.levels[1] < RETURN_ARRIVED_DBFS && Date.now() < arriveBy);
  emit('return_other_arrived', Boolean(frame) && frame.levels[1] >= RETURN_ARRIVED_DBFS);
  const frames = [];
  const end = Date.now() + args.measureSeconds * 1000;
  while (Date.now() < end) {
    await page.waitForTimeout(RETURN_READ_MS);
    frame = await read();
    if (!frame) break; // the return was replaced: a reconnect, reported elsewhere
    // A frame read twice (the audio clock did not move) counts once.
    if (frames.length === 0 || frame.time !== frames[frames.length - 1].time) frames.push(frame);
  }
  const own_ = frames.map((f) => f.levels[0]);
  const other_ = frames.map((f) => f.levels[1]);
  emit('return_frames', frames.length);
  emit('return_own_dbfs', median(own_).toFixed(2));
  emit('return_own_max_dbfs', Math.max(...own_).toFixed(2));
  emit('return_other_dbfs', median(other_).toFixed(2));
  emit('return_other_min_dbfs', Math.min(...other_).toFixed(2));
  emit('return_other_max_dbfs', Math.max(...other_).toFixed(2));
  emit('return_rms_dbfs', median(frames.map((f) => f.rms)).toFixed(2));
  const state = await page.evaluate(() => ({ ...window.onairHost }));
  emit('room_text', await roomText(page));
  emit('room_hosts', JSON.stringify(state.room));
  emit('room_status', state.roomStatus);
  emit('return_text', await page.locator('#return-state').textContent());
}

/** Waits for `file` to exist, up to `ms`; whether it did. */
async function waitForFile(file, ms) {
  const by = Date.now() + ms;
  while (!fs.existsSync(file)) {
    if (Date.now() > by) return false;
    await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS));
  }
  return true;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    ignoreDefaultArgs: true,
    args: [...CHROMIUM_FLAGS, ...tlsFlags(args), `--use-file-for-fake-audio-capture=${args.audioFile}`,
      `--user-data-dir=${args.userDataDir}`, '--remote-debugging-pipe'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 480, height: 720 } });
    const pageErrors = [];
    const consoleErrors = [];
    page.on('pageerror', (error) => pageErrors.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push(message.text());
    });
    const whip = recordWhip(page);
    await page.addInitScript(watchPeerConnections, { relayOnly: Boolean(args.relayOnly) });
    emit('browser', browser.version());

    const response = await page.goto(args.page);
    emit('page_status', response.status());
    emit('secure_context', await page.evaluate(() => window.isSecureContext));
    emit('go_disabled', await page.getByRole('button', { name: 'Go on air' }).isDisabled());
    if (!response.ok()) throw new Error(`GET ${args.page} answered ${response.status()}`);
    const started = Date.now();
    if (args.token !== undefined) {
      await page.getByLabel('Host key').fill(args.token);
      await page.getByRole('button', { name: 'Go on air' }).click();
    }
    const host = () => page.evaluate(() => ({ ...window.onairHost }));

    await page.waitForFunction(
      () => window.onairHost.onAir || window.onairHost.state === 'failed',
      null, { timeout: args.onAirTimeout * 1000, polling: 50 }).catch(() => {});
    const onAirAt = Date.now();
    let state = await host();
    emit('on_air_after_s', ((onAirAt - started) / 1000).toFixed(2));
    emit('on_air_at_ms', state.onAir ? onAirAt : NaN);
    emit('on_air_badge', await page.locator('#on-air').getAttribute('data-on'));
    emit('output', state.output);
    emit('echo_cancellation', state.echoCancellation);
    if (args.measureReturn && state.onAir) await measureReturn(page, args);
    if (args.measuredFile) fs.writeFileSync(args.measuredFile, 'measured\n');
    if (args.stayUntilFile) emit('other_measured', await waitForFile(args.stayUntilFile, RETURN_WAIT_MS * 2));
    if (args.thenSpeakers && state.onAir) {
      await page.getByRole('radio', { name: 'Speakers' }).check();
      const swapped = await page.waitForFunction(() => window.onairHost.micSwaps > 0, null,
        { timeout: RETURN_WAIT_MS, polling: 50 }).then(() => true, () => false);
      const after = await host();
      emit('speakers_swapped', swapped);
      emit('speakers_output', after.output);
      emit('speakers_echo_cancellation', after.echoCancellation);
      emit('speakers_same_session', after.session === state.session);
      emit('speakers_on_air', after.onAir);
    }
    state = await host();

    const levels = [];
    const mutedLevels = [];
    const connectionStates = new Set();
    let offAirWhileWanted = 0;
    let wasOnAir = state.onAir;
    const steps = [
      { at: args.muteAt, key: 'mute_at_ms', checked: 'true' },
      { at: args.unmuteAt, key: 'unmute_at_ms', checked: 'false' },
    ].filter((step) => step.at !== undefined && state.onAir);
    const until = onAirAt + args.seconds * 1000;
    while (Date.now() < until) {
      await page.waitForTimeout(SAMPLE_MS);
      const elapsed = (Date.now() - onAirAt) / 1000;
      if (steps.length > 0 && elapsed >= steps[0].at) {
        const step = steps.shift();
        const toggle = page.getByRole('switch', { name: 'Mute microphone' });
        await toggle.click();
        emit(step.key, Date.now());
        emit(`${step.key.replace('_at_ms', '')}_switch_checked`,
          (await toggle.getAttribute('aria-checked')) === step.checked);
      }
      state = await host();
      connectionStates.add(state.connectionState);
      if (state.level !== null) (state.muted ? mutedLevels : levels).push(state.level);
      if (wasOnAir && !state.onAir) offAirWhileWanted++;
      wasOnAir = state.onAir;
    }

    const pair = await page.evaluate(selectedPair);
    for (const [key, value] of Object.entries(pair)) emit(`ice_${key}`, value);
    emit('ice_servers', await page.evaluate(() => JSON.stringify(window.__onairIceServers || [])));
    emit('state', state.state);
    emit('connection_state', state.connectionState);
    emit('connection_states_seen', [...connectionStates]);
    emit('on_air', state.onAir);
    emit('on_air_seen', state.onAirSeen);
    emit('on_air_drops', offAirWhileWanted);
    emit('status_text', await page.locator('#status').textContent());
    emit('connection_text', await page.locator('#connection').textContent());
    emit('meter_valuetext', await page.locator('#meter').getAttribute('aria-valuetext'));
    emit('level_samples', levels.length);
    emit('level_median_db', median(levels).toFixed(2));
    emit('level_max_db', (levels.length ? Math.max(...levels) : NaN).toFixed(2));
    emit('muted_level_median_db', median(mutedLevels).toFixed(2));
    emit('channels', state.channels);
    emit('answer_stereo', state.answerStereo);
    emit('session', state.session);
    emit('reconnects', state.reconnects);
    emit('warnings', state.warnings);
    emit('host_errors', state.errors);
    emit('host_error_count', state.errors.length);
    emit('error_text', (await page.locator('#error').isVisible())
      ? await page.locator('#error').textContent() : '');
    if (args.screenshot) {
      await page.screenshot({ path: args.screenshot });
      emit('screenshot', args.screenshot);
    }

    if (state.onAir) {
      await page.getByRole('button', { name: 'Go off air' }).click();
      emit('off_air_at_ms', Date.now());
      await page.waitForFunction(() => window.onairHost.deleteStatus !== null, null,
        { timeout: 3000 }).catch(() => {});
      const after = await host();
      emit('off_air_state', after.state);
      emit('delete_status', after.deleteStatus);
      // Off air, the room list is gone and no longer asked for.
      emit('off_air_room_hidden', await page.locator('#room-section').isHidden());
      emit('off_air_room', JSON.stringify(after.room));
      emit('off_air_hearing', after.hearing);
    }
    emit('whip_requests', whip.map((x) => `${x.method} ${x.status}`));
    emit('post_count', whip.filter((x) => x.method === 'POST').length);
    emit('page_errors', pageErrors);
    emit('page_error_count', pageErrors.length);
    emit('console_errors', consoleErrors);
  } finally {
    await browser.close();
  }
}

setTimeout(() => {
  console.error(`host.js: no result after ${DEADLINE_MS / 1000} s`);
  process.exit(2);
}, DEADLINE_MS).unref();

main().catch((error) => {
  console.error(`host.js: ${error.stack || error}`);
  process.exit(1);
});
