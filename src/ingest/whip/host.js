// The onair host studio: publishes the microphone to the stream's live mix
// over WHIP (RFC 9725): one RTCPeerConnection with one Opus audio m-line, its
// SDP offer POSTed to `whip` (relative to the page, so `/{stream}/whip`) with
// the host's key as a bearer token, the answer from the `201 Created`, and a
// `DELETE` of the session URL (the response's `Location`) to leave.
//
// - The audio is offered `sendrecv`: the studio sends back, on the same
//   m-line, its mix-minus return (the program without this host's own
//   voice), which the page plays in an `<audio>` element, so hosts hear each
//   other live. The same stream also feeds the page's Web Audio graph
//   (Chromium only delivers WebRTC audio to Web Audio while an element
//   plays it).
// - Headphones or speakers (default headphones): with headphones the
//   microphone is taken raw, for broadcast quality; with speakers it is
//   taken again with echo cancellation on and swapped into the sender with
//   `replaceTrack`, without renegotiating.
// - While on air, the page asks `room` (relative, `GET` with the key) every
//   ROOM_INTERVAL_MS who is in the studio, on air and speaking, and lists
//   them; it stops when the host goes off air.
//
// - The server is ICE-lite and takes no trickled candidates (`PATCH` is
//   refused), so the offer is sent once ICE gathering has completed (or after
//   GATHER_TIMEOUT_MS with what was gathered): non-trickle WHIP, §4.1.
// - The key comes from the password field or from the URL fragment,
//   `#token=KEY`, which browsers never send to servers (not in requests, not
//   in Referer). `#token=KEY&start=1` goes on air without a click, for kiosks
//   and automation.
// - A connection that is `disconnected` or `failed` for BLIP_GRACE_MS, one
//   that never connects, and a POST that fails are retried with backoff (1, 2,
//   4, 8, then every 15 s): the old session is DELETEd first. A refused key
//   (401/403) and the server refusing the offer itself stop for good.
// - Mute disables the track: the browser keeps sending RTP (silence), so the
//   session and the host's place in the mix stay up.
//
// `window.onairHost` exposes the state for tests and the curious: state,
// connectionState (the RTCPeerConnection's), onAir, onAirSeen, muted, level
// (RMS dBFS of the microphone, null while closed), peakLevel, channels,
// session (URL), deleteStatus (of the last session's DELETE), answerStereo
// (whether the answer asks for stereo), errors (shown to the host), warnings
// (recovered problems), reconnects, output (`headphones` or `speakers`),
// echoCancellation (the microphone track's setting, null while closed),
// micSwaps (microphones swapped in by replaceTrack), hearing (a return is
// playing), room (the hosts last listed: name, state, muted, speaking, you;
// null before the first answer) and roomStatus (the last room answer's
// HTTP status). `window.onairReturn` is the MediaStreamAudioSourceNode the
// return flows through in the page's AudioContext (null while there is
// none), for tests to measure what the host hears.
'use strict';
(function () {
  /** How long to wait for ICE gathering before sending what was gathered. */
  const GATHER_TIMEOUT_MS = 2000;
  /** How long `disconnected` or `failed` may last before reconnecting. */
  const BLIP_GRACE_MS = 3000;
  /** How long a DELETE may take before the connection is closed anyway. */
  const DELETE_PATIENCE_MS = 2000;
  /** How long an accepted offer may take to connect before retrying. */
  const CONNECT_TIMEOUT_MS = 10000;
  /** Reconnect backoff: first delay and ceiling, in milliseconds. */
  const RETRY_FIRST_MS = 1000;
  const RETRY_MAX_MS = 15000;
  /** The longest `Retry-After` honoured, in seconds. */
  const RETRY_AFTER_MAX_S = 60;
  /** The meter's scale: its bottom, in dBFS (the top is 0 dBFS). */
  const METER_FLOOR_DB = -60;
  /** How often the meter is redrawn, and how often its value is announced. */
  const METER_INTERVAL_MS = 50;
  const METER_ARIA_INTERVAL_MS = 1000;
  /** How fast the meter's peak falls back, in dB per second. */
  const METER_FALL_DB_PER_S = 20;
  /** How often the room (who is in the studio) is asked for while on air. */
  const ROOM_INTERVAL_MS = 1000;
  const ROOM_STATE_TEXT = {
    offline: 'offline',
    connected: 'joining',
    'on-air': 'on air',
    playing: 'playing',
    ducked: 'ducked',
  };
  const STATE_TEXT = {
    idle: 'Enter your host key and go on air',
    starting: 'Opening the microphone…',
    connecting: 'Connecting to the studio…',
    onair: 'On air: the studio hears you',
    interrupted: 'Connection interrupted…',
    reconnecting: 'Connection lost, reconnecting…',
    failed: 'Not on air',
  };
  const CONNECTION_TEXT = {
    new: 'not connected',
    connecting: 'connecting',
    connected: 'connected',
    disconnected: 'interrupted',
    failed: 'failed',
    closed: 'closed',
  };

  const config = JSON.parse(document.getElementById('onair-config').textContent);
  const whipUrl = new URL(config.whip, location.href).href;
  const roomUrl = new URL('room', location.href).href;
  const main = document.querySelector('main');
  const form = document.getElementById('start-form');
  const tokenInput = document.getElementById('token');
  const button = document.getElementById('go');
  const statusText = document.getElementById('status');
  const onAirBadge = document.getElementById('on-air');
  const connectionText = document.getElementById('connection');
  const errorBox = document.getElementById('error');
  const meter = document.getElementById('meter');
  const meterFill = meter.querySelector('.meter-fill');
  const muteSwitch = document.getElementById('mute');
  const outputChoices = document.querySelectorAll('input[name="output"]');
  const returnAudio = document.getElementById('return');
  const returnText = document.getElementById('return-state');
  const roomSection = document.getElementById('room-section');
  const roomList = document.getElementById('room');

  const host = {
    state: 'idle',
    connectionState: 'new',
    onAir: false,
    onAirSeen: false,
    muted: false,
    level: null,
    peakLevel: null,
    channels: null,
    session: null,
    deleteStatus: null,
    answerStereo: null,
    errors: [],
    warnings: [],
    reconnects: 0,
    output: 'headphones',
    echoCancellation: null,
    micSwaps: 0,
    hearing: false,
    room: null,
    roomStatus: null,
  };
  window.onairHost = host;
  window.onairReturn = null;

  // Whether the host wants to be on air (pressed "Go on air", no fatal error).
  let wanted = false;
  // Bumped whenever a connection ends, so late callbacks of an old one
  // (promises, peer connection events) are ignored.
  let generation = 0;
  let token = '';
  let mic = null;
  let peer = null;
  // The sender of the microphone on the current connection (replaceTrack).
  let sender = null;
  // Bumped by each change of output, so a slower earlier swap is dropped.
  let swapGeneration = 0;
  let retryDelay = RETRY_FIRST_MS;
  let retryTimer = 0;
  let blipTimer = 0;
  let connectTimer = 0;
  const level = { context: null, analyser: null, track: null, timer: 0, shown: METER_FLOOR_DB, ariaAt: 0 };
  // The return's nodes in the meter's AudioContext.
  const heard = { source: null, silent: null };
  // The room's polling: `id` is bumped to stop it (late answers are dropped).
  const roomPoll = { id: 0, active: false, timer: 0, shown: '' };

  // --- Controls -----------------------------------------------------------

  form.addEventListener('submit', function (event) {
    event.preventDefault();
    if (wanted) stop(); else start();
  });
  muteSwitch.addEventListener('click', function () { setMuted(!host.muted); });
  for (const choice of outputChoices) {
    choice.addEventListener('change', function () { if (choice.checked) setOutput(choice.value); });
  }
  // A kiosk start has no user gesture, so browsers keep the meter's audio
  // context suspended, and may refuse to play the return, until the first
  // one.
  document.addEventListener('pointerdown', function () {
    if (level.context) level.context.resume().catch(function () {});
    if (returnAudio.srcObject && returnAudio.paused) returnAudio.play().catch(function () {});
  });
  // The fragment never leaves the browser; it stays in the address bar so a
  // kiosk that reloads goes back on air.
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get('token')) tokenInput.value = fragment.get('token');

  // Browsers give the microphone (navigator.mediaDevices) only to secure
  // contexts: pages over HTTPS, or over HTTP from this very machine
  // (127.0.0.1, localhost). Say so at once, with the way out, rather than
  // after the host pressed the button.
  if (!window.isSecureContext) {
    const secure = 'https://' + location.host + location.pathname;
    showError('This page must be opened over HTTPS to use the microphone: browsers allow it only on '
      + 'secure pages. Try ' + secure + ' . If that does not answer, the broadcast\'s operator '
      + 'starts onair with --tls-cert FILE --tls-key FILE, or puts it behind an HTTPS proxy or CDN '
      + '(see "HTTPS" in the onair README).');
    button.disabled = true;
  }

  function setState(state) {
    host.state = state;
    main.dataset.state = state;
    statusText.textContent = STATE_TEXT[state];
  }

  function setOnAir(on) {
    host.onAir = on;
    if (on) host.onAirSeen = true;
    onAirBadge.dataset.on = String(on);
    if (on) startRoom();
  }

  function setButton() {
    button.dataset.playing = String(wanted);
    button.querySelector('.label').textContent = wanted ? 'Go off air' : 'Go on air';
    tokenInput.readOnly = wanted;
  }

  function setMuted(muted) {
    host.muted = muted;
    main.dataset.muted = String(muted);
    muteSwitch.setAttribute('aria-checked', String(muted));
    if (mic) for (const track of mic.getAudioTracks()) track.enabled = !muted;
  }

  function showError(message) {
    host.errors.push(message);
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.hidden = true;
    errorBox.textContent = '';
  }

  function showConnection(state) {
    host.connectionState = state;
    connectionText.textContent = CONNECTION_TEXT[state] || state;
  }

  // --- Going on and off air -----------------------------------------------

  async function start() {
    token = tokenInput.value.trim();
    if (!token) {
      tokenInput.focus();
      return;
    }
    wanted = true;
    retryDelay = RETRY_FIRST_MS;
    clearError();
    setButton();
    setState('starting');
    // Created before the first await, while the click still counts as a user
    // gesture: Safari keeps a context made later suspended.
    createAudioContext();
    const current = generation;
    const output = host.output;
    let stream;
    try {
      stream = await openMicrophone(output);
    } catch (error) {
      if (current === generation && wanted) fail(microphoneError(error));
      return;
    }
    if (current !== generation || !wanted) {
      // Stopped while the browser asked for the microphone.
      for (const track of stream.getTracks()) track.stop();
      return;
    }
    useMicrophone(stream);
    connect();
    // The host changed headphones and speakers while the browser asked.
    if (host.output !== output) setOutput(host.output);
  }

  function stop() {
    wanted = false;
    swapGeneration++;
    stopRoom();
    endSession(false);
    closeMicrophone();
    setOnAir(false);
    showConnection('new');
    setButton();
    setState('idle');
  }

  // Gives up until the host presses "Go on air" again.
  function fail(message) {
    showError(message);
    stop();
    setState('failed');
  }

  // Ends the current connection: cancels its timers, DELETEs its session and
  // closes the peer connection once the DELETE is answered (closing first
  // would end the session by DTLS close_notify, and the DELETE would find
  // nothing to end). While the page unloads the DELETE is sent with
  // `keepalive`, so it outlives the page (sendBeacon can only POST), and the
  // browser closes the connection itself.
  function endSession(unloading) {
    generation++;
    clearTimeout(retryTimer);
    clearTimeout(blipTimer);
    clearTimeout(connectTimer);
    blipTimer = 0;
    const pc = peer;
    const session = host.session;
    peer = null;
    sender = null;
    host.session = null;
    stopReturn();
    let deleted = Promise.resolve();
    if (session) {
      deleted = fetch(session, {
        method: 'DELETE',
        headers: { Authorization: 'Bearer ' + token },
        keepalive: unloading,
        cache: 'no-store',
      }).then(function (response) {
        host.deleteStatus = response.status;
      }, function () {
        host.deleteStatus = 'failed'; // the session times out on the server anyway
      });
    }
    if (pc && !unloading) {
      const patience = new Promise(function (resolve) { setTimeout(resolve, DELETE_PATIENCE_MS); });
      Promise.race([deleted, patience]).then(function () { pc.close(); });
    }
  }

  function retryLater(reason, delayMs) {
    host.warnings.push(reason);
    host.reconnects++;
    endSession(false);
    setOnAir(false);
    setState('reconnecting');
    const delay = delayMs === undefined ? retryDelay : delayMs;
    retryDelay = Math.min(retryDelay * 2, RETRY_MAX_MS);
    statusText.textContent = 'Connection lost, reconnecting in ' + Math.round(delay / 1000) + ' s…';
    retryTimer = setTimeout(function () { if (wanted) connect(); }, delay);
  }

  window.addEventListener('pagehide', function () {
    if (wanted) endSession(true);
  });
  window.addEventListener('pageshow', function (event) {
    // Back from the back-forward cache: the session was ended on the way out.
    if (event.persisted && wanted) connect();
  });

  // --- The microphone and its meter ---------------------------------------

  async function openMicrophone(output) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error('insecure');
    }
    const audio = output === 'speakers'
      // Speakers: the studio's return comes out of them into the
      // microphone, and would go back into the program: the others would
      // hear themselves again, late. Echo cancellation removes it (the
      // browser's noise suppression and gain control come with it, as it
      // prefers); the price is a voice processed as in a call.
      ? { echoCancellation: true, channelCount: { ideal: 2 } }
      // Headphones (the default): broadcast, not a call. Echo cancellation,
      // noise suppression and automatic gain control would pump the level,
      // gate breaths and music, and fight the studio's own gain.
      : { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: { ideal: 2 } };
    return navigator.mediaDevices.getUserMedia({ audio: audio, video: false });
  }

  function useMicrophone(stream) {
    mic = stream;
    const track = mic.getAudioTracks()[0];
    const settings = track.getSettings();
    host.channels = settings.channelCount || null;
    host.echoCancellation = settings.echoCancellation === undefined ? null : settings.echoCancellation;
    track.addEventListener('ended', function () {
      if (wanted) fail('The microphone was disconnected or taken away. Go on air again to pick one.');
    });
    setMuted(host.muted);
    startMeter(track);
  }

  function closeMicrophone() {
    stopMeter();
    if (mic) for (const track of mic.getTracks()) track.stop();
    mic = null;
    host.echoCancellation = null;
  }

  // Headphones or speakers. On air, the microphone is opened again with the
  // processing that suits the choice and swapped into the sender: same
  // session, no new offer, the studio hears no gap beyond the swap itself.
  // Off air the choice applies when the microphone next opens.
  async function setOutput(output) {
    host.output = output;
    main.dataset.output = output;
    for (const choice of outputChoices) choice.checked = choice.value === output;
    if (!mic) return;
    const swap = ++swapGeneration;
    let stream;
    try {
      stream = await openMicrophone(output);
    } catch (error) {
      if (swap === swapGeneration && wanted) showError(microphoneError(error));
      return;
    }
    if (swap !== swapGeneration || !wanted || !mic) {
      for (const track of stream.getTracks()) track.stop();
      return;
    }
    const old = mic;
    useMicrophone(stream);
    if (sender) {
      try {
        await sender.replaceTrack(stream.getAudioTracks()[0]);
      } catch (error) {
        // Only a track of another kind needs renegotiating; say so if it
        // ever happens, and keep what is sent.
        host.warnings.push('could not swap the microphone: ' + error.message);
      }
    }
    host.micSwaps++;
    for (const track of old.getTracks()) track.stop();
  }

  function microphoneError(error) {
    if (error.message === 'insecure') {
      return 'This browser gives pages the microphone over HTTPS only: open this page with https://.';
    }
    if (error.name === 'NotAllowedError' || error.name === 'SecurityError') {
      return 'The browser refused the microphone: allow it for this page, then go on air again.';
    }
    if (error.name === 'NotFoundError' || error.name === 'OverconstrainedError') {
      return 'No microphone was found.';
    }
    if (error.name === 'NotReadableError') {
      return 'The microphone is in use by another program or could not be opened.';
    }
    return 'Could not open the microphone (' + error.name + ': ' + error.message + ').';
  }

  function createAudioContext() {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return;
    if (!level.context) level.context = new Context();
    level.context.resume().catch(function () { /* resumed by the next click */ });
  }

  // The meter reads a clone of the track, which mute leaves enabled: it shows
  // what the microphone hears even while nothing is sent.
  function startMeter(track) {
    stopMeter();
    if (!level.context) return;
    level.track = track.clone();
    level.track.enabled = true;
    const source = level.context.createMediaStreamSource(new MediaStream([level.track]));
    level.analyser = level.context.createAnalyser();
    level.analyser.fftSize = 2048;
    // Safari pulls audio through a graph only when it reaches the
    // destination: connect through a silent gain, so nothing is heard.
    const silent = level.context.createGain();
    silent.gain.value = 0;
    source.connect(level.analyser);
    level.analyser.connect(silent);
    silent.connect(level.context.destination);
    const samples = new Float32Array(level.analyser.fftSize);
    let last = performance.now();
    level.timer = setInterval(function () {
      level.analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      let peak = 0;
      for (const sample of samples) {
        sum += sample * sample;
        peak = Math.max(peak, Math.abs(sample));
      }
      const now = performance.now();
      showLevel(decibels(Math.sqrt(sum / samples.length)), decibels(peak), (now - last) / 1000);
      last = now;
    }, METER_INTERVAL_MS);
  }

  function stopMeter() {
    clearInterval(level.timer);
    if (level.track) level.track.stop();
    level.track = null;
    level.analyser = null;
    host.level = null;
    host.peakLevel = null;
    level.shown = METER_FLOOR_DB;
    drawMeter(METER_FLOOR_DB, 'no signal');
  }

  function decibels(amplitude) {
    return amplitude > 0 ? 20 * Math.log10(amplitude) : -Infinity;
  }

  // The bar follows the peak up at once and falls back slowly, as a PPM does.
  function showLevel(rmsDb, peakDb, elapsedS) {
    host.level = Math.max(rmsDb, -200);
    host.peakLevel = Math.max(peakDb, -200);
    level.shown = Math.max(peakDb, level.shown - METER_FALL_DB_PER_S * elapsedS, METER_FLOOR_DB);
    const now = performance.now();
    if (now - level.ariaAt >= METER_ARIA_INTERVAL_MS) {
      level.ariaAt = now;
      const text = level.shown <= METER_FLOOR_DB ? 'no signal' : Math.round(level.shown) + ' dB';
      drawMeter(level.shown, text);
    } else {
      drawMeter(level.shown, null);
    }
  }

  function drawMeter(db, ariaText) {
    const fraction = (Math.min(db, 0) - METER_FLOOR_DB) / -METER_FLOOR_DB;
    // Clipped rather than scaled, so each colour stays at its level.
    meterFill.style.clipPath = 'inset(0 ' + (100 - 100 * Math.max(fraction, 0)).toFixed(1) + '% 0 0)';
    meter.dataset.clip = String(db > -1);
    if (ariaText !== null) {
      meter.setAttribute('aria-valuenow', String(Math.round(Math.max(db, METER_FLOOR_DB))));
      meter.setAttribute('aria-valuetext', ariaText);
    }
  }

  // --- WHIP ---------------------------------------------------------------

  async function connect() {
    endSession(false);
    const current = generation;
    setState(host.reconnects > 0 ? 'reconnecting' : 'connecting');
    // The endpoint is ICE-lite without trickle: TURN servers must be known
    // before the offer is made, so they are asked for first.
    let iceServers = [];
    if (config.ice === 'fetch') {
      try {
        const response = await fetch(whipUrl, {
          headers: { Authorization: 'Bearer ' + token },
          cache: 'no-store',
        });
        if (current !== generation) return;
        if (!response.ok) {
          await onRefusal(response, current);
          return;
        }
        iceServers = (await response.json()).iceServers || [];
      } catch (error) {
        if (current === generation && wanted) retryLater('cannot get the ICE servers: ' + error.message);
        return;
      }
      if (current !== generation) return;
    }
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', iceServers: iceServers });
    peer = pc;
    pc.addEventListener('connectionstatechange', function () {
      if (current === generation) onConnectionState(pc.connectionState);
    });
    // The return: fired by the answer when the studio sends on the m-line.
    pc.addEventListener('track', function (event) {
      if (current === generation && event.track.kind === 'audio') playReturn(event.track);
    });
    showConnection(pc.connectionState);
    try {
      // sendrecv: the studio answers it with the host's mix-minus return
      // (a studio without returns answers recvonly, and nothing comes).
      const transceiver = pc.addTransceiver(mic.getAudioTracks()[0], { direction: 'sendrecv', streams: [mic] });
      sender = transceiver.sender;
      const offer = await pc.createOffer();
      await pc.setLocalDescription({ type: 'offer', sdp: withOpusParameters(offer.sdp, host.channels === 2) });
      await gatheringComplete(pc);
      if (current !== generation) return;
      const response = await fetch(whipUrl, {
        method: 'POST',
        headers: { 'Content-Type': 'application/sdp', Authorization: 'Bearer ' + token },
        body: pc.localDescription.sdp,
        cache: 'no-store',
      });
      if (current !== generation) {
        // Stopped meanwhile: end the session this answer opened.
        const late = response.headers.get('Location');
        if (response.status === 201 && late) {
          fetch(new URL(late, whipUrl).href, { method: 'DELETE', headers: { Authorization: 'Bearer ' + token } })
            .catch(function () {});
        }
        return;
      }
      await onWhipResponse(pc, response, current);
    } catch (error) {
      if (current === generation && wanted) retryLater('connection attempt failed: ' + error.message);
    }
  }

  async function onWhipResponse(pc, response, current) {
    if (response.status === 201) {
      const location = response.headers.get('Location');
      host.session = location ? new URL(location, whipUrl).href : null;
      if (!location) host.warnings.push('the server sent no session URL (Location): leaving cannot end it');
      const answer = await response.text();
      if (current !== generation) return;
      host.answerStereo = /^a=fmtp:\d+ .*\bstereo=1\b/m.test(answer);
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      connectTimer = setTimeout(function () {
        if (current === generation && pc.connectionState !== 'connected') {
          retryLater('no connection ' + CONNECT_TIMEOUT_MS / 1000 + ' s after the answer');
        }
      }, CONNECT_TIMEOUT_MS);
      return;
    }
    await onRefusal(response, current);
  }

  /** What a refused WHIP request (the offer, or the ICE servers) means for
   * the host: a wrong key and a bad offer stop, a busy studio is retried. */
  async function onRefusal(response, current) {
    const reason = (await response.text().catch(function () { return ''; })).trim().slice(0, 300);
    if (current !== generation) return;
    if (response.status === 401 || response.status === 403) {
      fail('The studio refused this host key: check it and go on air again.');
      tokenInput.focus();
    } else if (response.status === 404) {
      fail('This stream takes no browser hosts (the server answered 404).');
    } else if (response.status === 503 || response.status === 429 || response.status >= 500) {
      const after = Number(response.headers.get('Retry-After'));
      const delay = after > 0 ? Math.min(after, RETRY_AFTER_MAX_S) * 1000 : undefined;
      retryLater('the studio is busy (' + response.status + (reason ? ': ' + reason : '') + ')', delay);
    } else {
      // 400, 413, 415: this offer will not do better next time.
      fail('The studio refused the connection (' + response.status + (reason ? ': ' + reason : '') + ').');
    }
  }

  function onConnectionState(state) {
    showConnection(state);
    if (state === 'connected') {
      clearTimeout(blipTimer);
      clearTimeout(connectTimer);
      blipTimer = 0;
      retryDelay = RETRY_FIRST_MS;
      clearError();
      setOnAir(true);
      setState('onair');
      return;
    }
    setOnAir(false);
    if ((state === 'disconnected' || state === 'failed') && !blipTimer) {
      // ICE often recovers from a short blip by itself (RFC 8445 §8.2, the
      // agent keeps checking); a real break gets a new session.
      setState('interrupted');
      blipTimer = setTimeout(function () {
        blipTimer = 0;
        if (wanted) retryLater('connection ' + state + ' for ' + BLIP_GRACE_MS / 1000 + ' s');
      }, BLIP_GRACE_MS);
    }
  }

  function gatheringComplete(pc) {
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise(function (resolve) {
      const timer = setTimeout(done, GATHER_TIMEOUT_MS);
      pc.addEventListener('icegatheringstatechange', check);
      function check() { if (pc.iceGatheringState === 'complete') done(); }
      function done() {
        clearTimeout(timer);
        pc.removeEventListener('icegatheringstatechange', check);
        resolve();
      }
    });
  }

  // Adds to the offer's Opus format parameters (RFC 7587 §6.1) what browsers
  // may leave out: `useinbandfec=1` (Chromium and Safari offer it already),
  // so the loss of single packets is repaired, and for a stereo microphone
  // `stereo=1;sprop-stereo=1`: this end takes and sends two channels.
  // Parameters already there are kept as they are.
  function withOpusParameters(sdp, stereo) {
    const lines = sdp.split('\r\n');
    const rtpmap = lines.findIndex(function (line) { return /^a=rtpmap:\d+ opus\/48000\/2$/i.test(line); });
    if (rtpmap < 0) return sdp;
    const prefix = 'a=fmtp:' + lines[rtpmap].slice('a=rtpmap:'.length).split(' ')[0] + ' ';
    const wanted = stereo ? ['useinbandfec=1', 'stereo=1', 'sprop-stereo=1'] : ['useinbandfec=1'];
    const index = lines.findIndex(function (line) { return line.startsWith(prefix); });
    const params = index < 0 ? [] : lines[index].slice(prefix.length).split(';')
      .map(function (param) { return param.trim(); }).filter(Boolean);
    const name = function (param) { return param.split('=')[0].toLowerCase(); };
    for (const param of wanted) {
      if (!params.some(function (p) { return name(p) === name(param); })) params.push(param);
    }
    if (index < 0) lines.splice(rtpmap + 1, 0, prefix + params.join(';'));
    else lines[index] = prefix + params.join(';');
    return lines.join('\r\n');
  }

  // --- The return ---------------------------------------------------------

  // Plays what the studio sends back and feeds it to the page's audio graph
  // (through a silent gain, so it is heard once, from the element).
  function playReturn(track) {
    stopReturn();
    const stream = new MediaStream([track]);
    returnAudio.srcObject = stream;
    returnAudio.play().catch(function () { /* played at the next click */ });
    host.hearing = true;
    returnText.textContent = 'playing';
    if (level.context) {
      heard.source = level.context.createMediaStreamSource(stream);
      heard.silent = level.context.createGain();
      heard.silent.gain.value = 0;
      heard.source.connect(heard.silent);
      heard.silent.connect(level.context.destination);
      window.onairReturn = heard.source;
    }
  }

  function stopReturn() {
    if (heard.source) heard.source.disconnect();
    if (heard.silent) heard.silent.disconnect();
    heard.source = null;
    heard.silent = null;
    window.onairReturn = null;
    returnAudio.srcObject = null;
    host.hearing = false;
    returnText.textContent = 'none';
  }

  // --- The room -------------------------------------------------------------

  function startRoom() {
    if (roomPoll.active) return;
    roomPoll.active = true;
    pollRoom(++roomPoll.id);
  }

  function stopRoom() {
    roomPoll.id++;
    roomPoll.active = false;
    clearTimeout(roomPoll.timer);
    roomPoll.shown = '';
    host.room = null;
    roomList.replaceChildren();
    roomSection.hidden = true;
  }

  // One request at a time, the next a second after the answer. A studio
  // without a room (404) or refusing the key is not asked again; a failed
  // request keeps the last list up and is tried again.
  async function pollRoom(id) {
    let again = true;
    try {
      const response = await fetch(roomUrl, { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store' });
      if (id !== roomPoll.id) return;
      host.roomStatus = response.status;
      if (response.ok) {
        const room = await response.json();
        if (id !== roomPoll.id) return;
        showRoom(room);
      } else if (response.status === 404 || response.status === 401 || response.status === 403) {
        again = false;
      }
    } catch (error) {
      if (id !== roomPoll.id) return;
    }
    if (again) roomPoll.timer = setTimeout(function () { pollRoom(id); }, ROOM_INTERVAL_MS);
  }

  // Names go in as text (textContent), never as markup. The list is rebuilt
  // only when it changed, so a screen reader in it is not thrown out every
  // second.
  function showRoom(room) {
    const hosts = (Array.isArray(room.hosts) ? room.hosts : []).map(function (h) {
      return { name: String(h.name), state: String(h.state), muted: Boolean(h.muted), speaking: Boolean(h.speaking), you: h.name === room.you };
    });
    host.room = hosts;
    roomSection.hidden = false;
    const shown = JSON.stringify(hosts);
    if (shown === roomPoll.shown) return;
    roomPoll.shown = shown;
    roomList.replaceChildren.apply(roomList, hosts.map(function (h) {
      const item = document.createElement('li');
      item.dataset.state = h.state;
      item.dataset.onAir = String(h.state === 'on-air' || h.state === 'playing');
      item.dataset.speaking = String(h.speaking);
      const light = document.createElement('span');
      light.className = 'light';
      light.setAttribute('aria-hidden', 'true');
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = h.name + (h.you ? ' (you)' : '');
      const what = document.createElement('span');
      what.className = 'what';
      const details = [ROOM_STATE_TEXT[h.state] || h.state];
      if (h.muted) details.push('muted');
      if (h.speaking) details.push('speaking');
      what.textContent = details.join(', ');
      item.append(light, name, ' ', what);
      return item;
    }));
  }

  // --- Kiosk start ----------------------------------------------------------

  if (fragment.get('start') === '1' && tokenInput.value) start();
})();
