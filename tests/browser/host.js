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
// network where only a TURN server is reachable would. Exits non-zero only
// when it could not run.
'use strict';

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

function parseArgs(argv) {
  const args = { seconds: 8, onAirTimeout: 20 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    args[key] = argv[i + 1];
  }
  for (const required of ['page', 'userDataDir', 'audioFile']) {
    if (!args[required]) throw new Error(`missing --${required}`);
  }
  for (const number of ['seconds', 'onAirTimeout', 'muteAt', 'unmuteAt']) {
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
