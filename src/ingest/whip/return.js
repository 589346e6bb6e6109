// The return page: plays a host's mix-minus return (the show without the
// host's own voice) over WHEP with the host's key, for hosts whose
// encoder has no return path (RTMP from OBS or ffmpeg). It offers a
// receive-only audio m-line, complete with its candidates (the endpoint is
// ICE-lite and takes no trickle ICE), POSTs it to `whep` relative to the
// page, plays the answer's audio and DELETEs the session on "Stop".
//
// The key is typed in or read from the URL fragment
// (`#token=KEY&start=1` starts at once, for a browser source in OBS); it
// never reaches the server in a URL. `window.onairReturn` exposes the
// state for tests.
'use strict';
(function () {
  const config = JSON.parse(document.getElementById('onair-config').textContent);
  const whepUrl = new URL(config.whep, location.href).href;
  /** How long to wait for ICE gathering before offering what there is. */
  const GATHER_TIMEOUT_MS = 3000;

  const form = document.getElementById('start-form');
  const tokenInput = document.getElementById('token');
  const go = document.getElementById('go');
  const statusText = document.getElementById('status');
  const connection = document.getElementById('connection');
  const errorText = document.getElementById('error');
  const audio = document.getElementById('return');
  const main = document.querySelector('main');

  const state = { phase: 'idle', pc: null, session: null, token: '', error: '' };
  window.onairReturn = state;

  function show(phase, text) {
    state.phase = phase;
    main.dataset.state = phase;
    statusText.textContent = text;
    const listening = phase === 'connecting' || phase === 'listening';
    go.dataset.playing = String(listening);
    go.querySelector('.label').textContent = listening ? 'Stop' : 'Listen';
  }

  function fail(text) {
    state.error = text;
    errorText.textContent = text;
    errorText.hidden = false;
    stop(false);
    show('failed', 'Not listening');
  }

  function gathered(pc) {
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

  async function listen(token) {
    errorText.hidden = true;
    state.error = '';
    state.token = token;
    show('connecting', 'Connecting…');
    const auth = { Authorization: 'Bearer ' + token };
    let iceServers = [];
    if (config.ice === 'fetch') {
      const response = await fetch(whepUrl, { headers: auth });
      if (!response.ok) return fail(await refusal(response));
      iceServers = (await response.json()).iceServers || [];
    }
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', iceServers: iceServers });
    state.pc = pc;
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.ontrack = function (event) {
      audio.srcObject = event.streams[0] || new MediaStream([event.track]);
      audio.play().catch(function () { /* autoplay waits for the click that started us */ });
    };
    pc.onconnectionstatechange = function () {
      connection.textContent = pc.connectionState;
      if (pc.connectionState === 'connected') show('listening', 'Listening to your return');
      if (pc.connectionState === 'failed') fail('The connection failed: check your network');
      if (pc.connectionState === 'closed' && state.pc === pc) show('idle', 'Stopped');
    };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const response = await fetch(whepUrl, {
      method: 'POST',
      headers: Object.assign({ 'Content-Type': 'application/sdp' }, auth),
      body: pc.localDescription.sdp,
    });
    if (response.status !== 201) return fail(await refusal(response));
    const late = response.headers.get('Location');
    state.session = late ? new URL(late, whepUrl).href : null;
    await pc.setRemoteDescription({ type: 'answer', sdp: await response.text() });
  }

  async function refusal(response) {
    const text = (await response.text()).trim();
    if (response.status === 401) return 'That key is not a host of this show';
    return text || ('The server refused: HTTP ' + response.status);
  }

  function stop(deleteSession) {
    const pc = state.pc;
    const session = state.session;
    state.pc = null;
    state.session = null;
    if (pc) pc.close();
    audio.srcObject = null;
    if (deleteSession && session) {
      fetch(session, { method: 'DELETE', headers: { Authorization: 'Bearer ' + state.token } })
        .catch(function () { /* the session times out by itself */ });
    }
    connection.textContent = 'not connected';
  }

  form.addEventListener('submit', function (event) {
    event.preventDefault();
    if (state.pc) {
      stop(true);
      show('idle', 'Stopped');
      return;
    }
    listen(tokenInput.value.trim()).catch(function (error) { fail(String(error)); });
  });

  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get('token')) {
    tokenInput.value = fragment.get('token');
    history.replaceState(null, '', location.pathname + location.search);
    if (fragment.get('start') === '1') form.requestSubmit();
  }
})();
