// The onair listener page: plays the stream's multivariant playlist
// (`index.m3u8`, relative to the page) with hls.js (loaded from the configured
// URL only when needed) wherever Media Source Extensions exist, because it
// plays the low-latency parts (about 1.3 s behind live in Chromium, against
// 6-8 s for Chromium's native player, which starts three segments back), and
// with the browser's own HLS player where there is no MSE (older iOS Safari).
// `?player=native` or `?player=hlsjs` forces one; a native player that cannot
// decode the stream hands over to hls.js.
//
// `window.onairPlayer` exposes the player's state for tests and the curious:
// kind, state, currentTime, latency (seconds behind live, or null),
// dateLatency (wall clock minus the program date of the playhead), liveJumps
// (how often the latency watch brought a player left behind back to the live
// edge), errors (what was shown to the listener) and warnings (recovered
// problems).
'use strict';
(function () {
  const HLS_MIME = 'application/vnd.apple.mpegurl';
  /** Seconds without progress before a stalled player is reconnected. */
  const STALL_LIMIT_S = 15;
  /** Reconnect backoff: first delay and ceiling, in milliseconds. */
  const RETRY_FIRST_MS = 1000;
  const RETRY_MAX_MS = 16000;
  /** hls.js media-error recoveries tried before reconnecting from scratch. */
  const MEDIA_RECOVERIES = 2;
  /** The latency watch (see watchLatency): a player playing more than this
   * many seconds past its normal delay, for this many checks in a row (one
   * check per tick, 500 ms), is brought back to the live edge. */
  const LATE_MARGIN_S = 5;
  /** Fastest playback rate hls.js may use to return to its target delay. */
  const MAX_CATCH_UP_RATE = 1.25;
  const LATE_CHECKS = 6;
  /** How long the status line says that the player jumped, in milliseconds. */
  const NOTICE_MS = 5000;
  const STATE_TEXT = {
    idle: 'Press play to listen',
    connecting: 'Connecting…',
    playing: 'Live',
    buffering: 'Buffering…',
    reconnecting: 'Connection lost, reconnecting…',
    ended: 'The broadcast has ended',
    failed: 'Playback failed',
  };

  const config = JSON.parse(document.getElementById('onair-config').textContent);
  const main = document.querySelector('main');
  const audio = document.getElementById('audio');
  const button = document.getElementById('play');
  const statusText = document.getElementById('status');
  const latencyText = document.getElementById('latency');
  const errorBox = document.getElementById('error');

  const forcedPlayer = new URLSearchParams(location.search).get('player');
  const player = {
    kind: forcedPlayer === 'native' || forcedPlayer === 'hlsjs' ? forcedPlayer
      : ('MediaSource' in window || 'ManagedMediaSource' in window) ? 'hlsjs'
      : audio.canPlayType(HLS_MIME) ? 'native' : 'hlsjs',
    state: 'idle',
    currentTime: 0,
    latency: null,
    dateLatency: null,
    errors: [],
    warnings: [],
    reconnects: 0,
    liveJumps: 0,
  };
  window.onairPlayer = player;

  // Whether the listener wants sound (pressed play and not stop).
  let wanted = false;
  // Bumped by every (re)connection, so late callbacks of an old one are ignored.
  let generation = 0;
  let hls = null;
  let mediaRecoveries = 0;
  let retryTimer = 0;
  let retryDelay = RETRY_FIRST_MS;
  let lastProgress = { time: -1, at: 0 };
  let hlsJsLoading = null;
  let nativeStart = { date: null, lookup: null, retryAt: 0 };
  // The latency watch: checks in a row that found the player late, and the
  // least latency this connection has played at (the native player's normal
  // delay: where the browser chose to join).
  let lateChecks = 0;
  let leastLatency = Infinity;
  // A passing word on the status line: { text, until (performance.now()) }.
  let notice = null;

  const streamUrl = new URL(config.playlist, location.href).href;
  const streamLink = document.getElementById('stream-url');
  streamLink.href = streamUrl;
  streamLink.textContent = streamUrl;
  showPlayerKind();

  function showPlayerKind() {
    document.getElementById('player-kind').textContent =
      player.kind === 'native' ? 'Browser HLS player' : 'hls.js player';
  }

  function setState(state) {
    player.state = state;
    main.dataset.state = state;
    showStatus();
  }

  // The state's text, or while it lasts the notice of a jump to the live
  // edge (only while there is sound to speak of).
  function showStatus() {
    const live = player.state === 'playing' || player.state === 'buffering';
    if (notice && (!live || performance.now() >= notice.until)) notice = null;
    statusText.textContent = notice ? notice.text : STATE_TEXT[player.state];
  }

  function showError(message) {
    player.errors.push(message);
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.hidden = true;
    errorBox.textContent = '';
  }

  function setButton() {
    // The label says what pressing does; no aria-pressed on top of it.
    button.dataset.playing = String(wanted);
    button.querySelector('.label').textContent = wanted ? 'Stop' : 'Play';
  }

  button.addEventListener('click', function () {
    if (wanted) stop(); else start();
  });
  if ('mediaSession' in navigator) {
    navigator.mediaSession.metadata = new MediaMetadata({ title: config.stream, artist: 'Live' });
    const handlers = [
      ['play', function () { if (!wanted) start(); }],
      ['pause', stop],
      ['stop', stop],
    ];
    for (const [action, handler] of handlers) {
      try { navigator.mediaSession.setActionHandler(action, handler); } catch (_) { /* unsupported */ }
    }
  }

  function start() {
    wanted = true;
    retryDelay = RETRY_FIRST_MS;
    clearError();
    setButton();
    setState('connecting');
    connect();
  }

  function stop() {
    wanted = false;
    teardown();
    setButton();
    setState('idle');
  }

  // Gives up: the listener can press play to try again.
  function fail(message) {
    showError(message);
    wanted = false;
    teardown();
    setButton();
    setState('failed');
  }

  function teardown() {
    generation++;
    clearTimeout(retryTimer);
    if (hls) {
      hls.destroy();
      hls = null;
    }
    if (audio.hasAttribute('src')) {
      audio.removeAttribute('src');
      audio.load();
    }
    player.latency = null;
    player.dateLatency = null;
    lateChecks = 0;
    leastLatency = Infinity;
    latencyText.textContent = '–';
  }

  function connect() {
    teardown();
    const current = generation;
    mediaRecoveries = 0;
    lastProgress = { time: -1, at: performance.now() };
    if (player.kind === 'native') {
      connectNative();
    } else {
      loadHlsJs().then(
        function () { if (current === generation) connectHlsJs(current); },
        function (error) { if (current === generation) fail(error.message); });
    }
  }

  function scheduleReconnect(reason) {
    player.warnings.push('reconnect: ' + reason);
    player.reconnects++;
    teardown();
    setState('reconnecting');
    const delay = retryDelay;
    retryDelay = Math.min(retryDelay * 2, RETRY_MAX_MS);
    retryTimer = setTimeout(function () { if (wanted) connect(); }, delay);
  }

  function play() {
    audio.play().catch(function (error) {
      // Autoplay policies refuse play() without a gesture: wait for one.
      if (error.name === 'NotAllowedError') stop();
      // AbortError: a newer load() or teardown interrupted this play().
    });
  }

  // --- The browser's own HLS player -------------------------------------

  function connectNative() {
    // The start-date lookup below reads this connection's requests only.
    performance.clearResourceTimings();
    nativeStart = { date: null, lookup: null, retryAt: 0 };
    audio.src = config.playlist;
    play();
  }

  // Program date (ms since the epoch) of currentTime 0, or null while unknown.
  // Safari exposes it (from EXT-X-PROGRAM-DATE-TIME) as getStartDate().
  // Chromium does not, but plays a live stream from the start of one segment
  // at currentTime 0, after reading the oldest listed segment once to probe
  // it: that start segment is the first of the last run of consecutive
  // segment numbers the media element requested (Resource Timing), and its
  // date is in the media playlist.
  function nativeStartDate() {
    if (nativeStart.date !== null) return nativeStart.date;
    const date = typeof audio.getStartDate === 'function' ? audio.getStartDate().getTime() : NaN;
    if (Number.isFinite(date) && date > 0) {
      nativeStart.date = date;
      return date;
    }
    const now = performance.now();
    if (nativeStart.lookup === null && audio.currentTime > 0 && now >= nativeStart.retryAt) {
      const current = generation;
      nativeStart.retryAt = now + 2000;
      nativeStart.lookup = lookUpStartSegmentDate().then(
        function (found) { if (current === generation) nativeStart.date = found; },
        function () {}).finally(function () { nativeStart.lookup = null; });
    }
    return null;
  }

  async function lookUpStartSegmentDate() {
    const segments = [];
    let playlist = null;
    for (const entry of performance.getEntriesByType('resource')) {
      if (entry.initiatorType !== 'audio' && entry.initiatorType !== 'video') continue;
      const path = new URL(entry.name).pathname;
      const segment = /\/(\d+)\.m4s$/.exec(path);
      if (segment) segments.push(Number(segment[1]));
      else if (path.endsWith('.m3u8') && !path.endsWith('/index.m3u8')) playlist = entry.name;
    }
    if (segments.length === 0 || playlist === null) return null;
    let first = segments.length - 1;
    while (first > 0 && segments[first - 1] <= segments[first] &&
           segments[first - 1] >= segments[first] - 1) first--;
    const response = await fetch(playlist, { cache: 'no-store' });
    if (!response.ok) return null;
    return segmentDate(await response.text(), segments[first]);
  }

  // Program date (ms) of segment `msn` in a media playlist, or null if it is
  // not listed (RFC 8216bis 4.4.4.6: a date applies to the next segment and
  // dates run on with the segment durations).
  function segmentDate(text, msn) {
    let sequence = 0;
    let date = null;
    for (const line of text.split('\n')) {
      if (line.startsWith('#EXT-X-MEDIA-SEQUENCE:')) {
        sequence = Number(line.slice('#EXT-X-MEDIA-SEQUENCE:'.length));
      } else if (line.startsWith('#EXT-X-PROGRAM-DATE-TIME:')) {
        date = Date.parse(line.slice('#EXT-X-PROGRAM-DATE-TIME:'.length));
      } else if (line.startsWith('#EXTINF:')) {
        if (sequence === msn) return date;
        if (date !== null) date += parseFloat(line.slice('#EXTINF:'.length)) * 1000;
        sequence++;
      }
    }
    return null;
  }

  // --- hls.js -----------------------------------------------------------

  function loadHlsJs() {
    if (window.Hls) return Promise.resolve();
    if (!hlsJsLoading) {
      hlsJsLoading = new Promise(function (resolve, reject) {
        const script = document.createElement('script');
        script.src = config.hlsjs;
        script.onload = function () { resolve(); };
        script.onerror = function () {
          hlsJsLoading = null;
          script.remove();
          reject(new Error('Could not load the player (hls.js) from ' + config.hlsjs));
        };
        document.head.appendChild(script);
      });
    }
    return hlsJsLoading;
  }

  function connectHlsJs(current) {
    const Hls = window.Hls;
    if (!Hls || !Hls.isSupported()) {
      fail('This browser can play neither HLS nor Media Source Extensions.');
      return;
    }
    // maxLiveSyncPlaybackRate: a player a few seconds past the delay hls.js
    // aims at (after a restart of the broadcast hls.js sometimes resumes
    // 5-6 s behind) plays up to a quarter faster, pitch preserved, until it
    // is back; the latency watch below handles players left further behind.
    // hls.js speeds up only with more than a second buffered ahead, which a
    // player at its normal delay never has.
    hls = new Hls({
      lowLatencyMode: true,
      liveDurationInfinity: true,
      backBufferLength: 30,
      maxLiveSyncPlaybackRate: MAX_CATCH_UP_RATE,
    });
    hls.on(Hls.Events.ERROR, function (_event, data) {
      if (current === generation) onHlsJsError(data);
    });
    hls.loadSource(config.playlist);
    hls.attachMedia(audio);
    play();
  }

  function onHlsJsError(data) {
    const what = 'hls.js ' + data.type + ': ' + data.details;
    if (!data.fatal) {
      // hls.js retries these itself (stalls, single failed loads).
      player.warnings.push(what);
      return;
    }
    if (data.type === window.Hls.ErrorTypes.MEDIA_ERROR && mediaRecoveries < MEDIA_RECOVERIES) {
      mediaRecoveries++;
      player.warnings.push(what + ' (recovering)');
      hls.recoverMediaError();
      return;
    }
    if (data.type === window.Hls.ErrorTypes.NETWORK_ERROR) {
      showError('Network error (' + data.details + '). Reconnecting…');
    } else {
      showError('Playback error (' + data.details + '). Reconnecting…');
    }
    scheduleReconnect(what);
  }

  // --- Media element events, both players -------------------------------

  audio.addEventListener('playing', function () {
    if (!wanted) return;
    retryDelay = RETRY_FIRST_MS;
    clearError();
    setState('playing');
  });
  audio.addEventListener('waiting', function () {
    if (wanted && player.state === 'playing') setState('buffering');
  });
  audio.addEventListener('ended', function () {
    if (!wanted) return;
    wanted = false;
    setButton();
    setState('ended');
  });
  audio.addEventListener('error', function () {
    // hls.js reports its own errors; an emptied src (teardown) is no error.
    if (!wanted || player.kind !== 'native' || !audio.error) return;
    const names = { 1: 'MEDIA_ERR_ABORTED', 2: 'MEDIA_ERR_NETWORK', 3: 'MEDIA_ERR_DECODE', 4: 'MEDIA_ERR_SRC_NOT_SUPPORTED' };
    const name = names[audio.error.code] || 'MEDIA_ERR_' + audio.error.code;
    const detail = audio.error.message ? name + ': ' + audio.error.message : name;
    if (audio.error.code === 2) {
      showError('Network error (' + detail + '). Reconnecting…');
      scheduleReconnect(detail);
    } else if (forcedPlayer !== 'native' && ('MediaSource' in window || 'ManagedMediaSource' in window)) {
      // Chromium's native HLS fails this way on some multivariant playlists
      // that hls.js plays (see page.rs).
      player.warnings.push('native HLS failed (' + detail + '): switching to hls.js');
      player.kind = 'hlsjs';
      showPlayerKind();
      connect();
    } else {
      fail('This browser could not play the stream: ' + detail);
    }
  });

  // --- Latency readout and stall watchdog --------------------------------

  function tick() {
    player.currentTime = audio.currentTime;
    if (!wanted || player.state === 'reconnecting') return;
    measureLatency();
    latencyText.textContent = player.latency === null ? '–' : player.latency.toFixed(1) + ' s';
    if (audio.paused && !audio.ended && (player.state === 'playing' || player.state === 'buffering')) {
      // Paused from outside the page (media keys, the browser's controls).
      stop();
      return;
    }
    watchLatency();
    showStatus();
    const now = performance.now();
    if (audio.currentTime !== lastProgress.time) {
      lastProgress = { time: audio.currentTime, at: now };
    } else if (now - lastProgress.at > STALL_LIMIT_S * 1000 && !audio.ended) {
      scheduleReconnect('no progress for ' + STALL_LIMIT_S + ' s');
    }
  }

  function measureLatency() {
    if (audio.currentTime <= 0) return;
    if (player.kind === 'hlsjs') {
      // Distance from the live edge of the newest playlist, as hls.js keeps it.
      player.latency = hls && hls.latency > 0 ? hls.latency : null;
      const date = hls && hls.playingDate;
      player.dateLatency = date ? (Date.now() - date.getTime()) / 1000 : null;
    } else {
      const start = nativeStartDate();
      player.dateLatency = start === null ? null : (Date.now() - start) / 1000 - audio.currentTime;
      player.latency = player.dateLatency;
    }
  }

  // A player that was left far behind the live edge (a store outage the
  // broadcast rode out: the playlists stopped, the player ran dry and
  // waited, then the publisher wrote its backlog and the playlists jumped
  // ahead) would play on from where it stopped, that far behind, for the
  // rest of the broadcast: neither player catches up by itself, and hls.js's
  // own limit (liveMaxLatencyDurationCount) is refused unless
  // liveSyncDurationCount is set, which would override the part hold back
  // that keeps hls.js at about 1.3 s. So the page watches: a player that has
  // played more than LATE_MARGIN_S past its normal delay for LATE_CHECKS
  // checks in a row seeks to the live edge. The margin is absolute because
  // LL-HLS jitter is (a late part, a stall of a segment or less, hls.js's
  // one-second steps of extra hold back after stalls), so normal playback
  // never reaches it; the checks in a row let a seek or a late playlist
  // settle. Only a player that plays is checked: buffering, seeking and
  // reconnecting players are on their way. A listener's pause is a stop
  // (tick), and pressing play again connects afresh at the live edge, so a
  // paused listener who resumes is back at the normal delay too, without
  // this watch.
  function watchLatency() {
    const latency = player.latency;
    if (player.state !== 'playing' || audio.paused || audio.seeking || latency === null) {
      lateChecks = 0;
      return;
    }
    leastLatency = Math.min(leastLatency, latency);
    const normal = normalDelay();
    if (latency <= normal + LATE_MARGIN_S) {
      lateChecks = 0;
      return;
    }
    if (++lateChecks < LATE_CHECKS) return;
    lateChecks = 0;
    const target = liveEdgePosition(latency, normal);
    // Not a jump forward worth the name (the edge is unknown yet): wait.
    if (target === null || target - audio.currentTime < LATE_MARGIN_S) return;
    if (player.kind === 'hlsjs') {
      // A plain seek is not enough: left behind, hls.js has fetched the
      // backlog as whole segments up to the newest complete one, so the
      // live sync position is inside that buffer, and from its end hls.js
      // waits (about three segments) for parts it believes it still lacks,
      // falling 6 s behind again. So loading stops, the buffer is emptied
      // and loading starts again at the new position, as when joining:
      // the newest parts come at once.
      hls.stopLoad();
      hls.trigger(window.Hls.Events.BUFFER_FLUSHING, { startOffset: 0, endOffset: Infinity, type: null });
      audio.currentTime = target;
      hls.startLoad(target);
    } else {
      audio.currentTime = target;
    }
    player.liveJumps++;
    player.warnings.push('latency watch: ' + latency.toFixed(1) + ' s behind, back to the live edge');
    notice = {
      text: 'Back to live (was ' + Math.round(latency) + ' s behind)',
      until: performance.now() + NOTICE_MS,
    };
  }

  // Seconds behind live the player normally plays at: for hls.js the delay
  // it aims at itself (the part hold back, plus its allowance for stalls);
  // for the native player the least it has played at on this connection.
  function normalDelay() {
    if (player.kind === 'hlsjs' && hls && hls.targetLatency > 0) return hls.targetLatency;
    return leastLatency;
  }

  // Where the live edge is, less the normal delay, in currentTime; or null.
  function liveEdgePosition(latency, normal) {
    if (player.kind === 'hlsjs') {
      const position = hls && hls.liveSyncPosition;
      return Number.isFinite(position) ? position : null;
    }
    // The native player's seekable range ends at its live edge, but how far
    // before the newest part differs by browser; the program date latency
    // says exactly how far the player is from its normal delay. The jump
    // covers that distance, and never past what can be played.
    let target = audio.currentTime + latency - normal;
    if (audio.seekable.length > 0) {
      target = Math.min(target, audio.seekable.end(audio.seekable.length - 1));
    }
    return Number.isFinite(target) ? target : null;
  }

  setInterval(tick, 500);
})();
