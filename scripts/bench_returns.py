#!/usr/bin/env python3
"""aiortc WHIP hosts for scripts/bench-returns.sh (docs/BENCHMARKS.md,
"Return feeds (mix-minus)").

  bench_returns.py latency --url URL --token-a SECRET --token-b SECRET
                           [--clicks N] [--interval S] [--admin-token T]
                           [--host-a NAME] [--program] --out RESULT.json
  bench_returns.py hosts --url URL --token SECRET [--token ...]
                         (--sendrecv | --sendonly) [--first-tone HZ]

`latency`: one process, two RTCPeerConnections, so every time below is read
from one clock (time.monotonic). Host A publishes (sendonly) silence with a
10 ms burst at -6 dBFS (1, 2, 3, 4 kHz in turn, so that every onset can be
told which click it is) every --interval seconds, the burst starting on
the first sample of a 20 ms frame; the instant its frame is returned from the
track's recv() to aiortc (aiortc pulls audio at the pace the track sets:
recv() sleeps until the frame's real-time instant, as aiortc's own
AudioStreamTrack does) is the click's time. Host B publishes silence and
offers sendrecv; its return is A's voice. For every frame B's track hands out
the arrival time is recorded, and onsets (a sample above -26 dBFS after at
least 200 ms below it) are found in B's audio; latency = frame arrival + the
onset's offset in its frame - click time. Where the time goes, from hooks
into aiortc:
  - A: recv() -> the click's RTP packet handed to the DTLS transport
    (aiortc's Opus encode: send-side buffering),
  - A's packet sent -> B's return packet holding the onset received
    (onair: UDP, its jitter buffer, the 20 ms tick, mix, return encode),
  - B's packet received -> its decoded frame out of recv() (aiortc's
    receive jitter buffer, 4 packets of prefetch, and Opus decode),
  - the onset's offset in its frame (codec delays: aiortc's libopus
    lookahead and onair's low-delay 2.5 ms).
With --admin-token the control API is polled every 500 ms for host A's
LiveFeed depth (`depth_ms`) and the hosts' underruns: clicks heard before
the first underrun are reported apart as "steady". With --program the Opus rendition is followed
as an LL-HLS client (blocking reload for the next part, then GET of the part,
decoded with PyAV) and click -> part downloaded is reported too.

`hosts`: one WHIP session per --token, each sending its own tone (a sine of
FIRST_TONE + 50 Hz x index, -12 dBFS, whole periods in 20 ms, so one frame
is precomputed), sendrecv (the received return is decoded by aiortc and
drained) or sendonly, until SIGTERM; then each session DELETEs its Location.
Reports, one JSON line each: {"session": i, "posted": 201}, {"session": i,
"receiving": true} at the first return frame, {"session": i, "deleted": S},
{"error": ...} (exit status 2).

Only 127.0.0.1 is offered as a host candidate, so ICE stays on loopback.
"""

import argparse
import array
import asyncio
import fractions
import io
import json
import math
import re
import signal
import statistics
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import aioice.ice
import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver

aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"]

RATE = 48000
FRAME = 960  # 20 ms
HTTP_TIMEOUT_S = 10
# Click n is a burst of BURST_HZ[n % 4]: the tone, told by its zero crossings
# in the CLASSIFY samples after the onset, says which click an onset is, so
# a lost click (or a late one) is never paired with its neighbour.
BURST_HZ = (1000, 2000, 3000, 4000)
BURST_SAMPLES = 480  # 10 ms
CLASSIFY = 240  # 5 ms: 10, 20, 30, 40 zero crossings
BURST_AMPLITUDE = 0.5  # -6 dBFS
THRESHOLD = int(32767 * 10 ** (-26 / 20))  # -26 dBFS
QUIET_BEFORE = RATE // 5  # 200 ms below the threshold before an onset


def emit(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def request(method, url, token=None, body=None, content_type=None, timeout=HTTP_TIMEOUT_S):
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if content_type is not None:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as reply:
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


async def in_thread(function, *args, **kwargs):
    return await asyncio.get_running_loop().run_in_executor(None, lambda: function(*args, **kwargs))


def stereo_frame(mono):
    """Interleaved s16 stereo bytes of a list of mono floats."""
    out = array.array("h")
    for x in mono:
        s = max(-32767, min(32767, int(round(x * 32767))))
        out.append(s)
        out.append(s)
    return out.tobytes()


SILENCE = bytes(FRAME * 4)


class PacedTrack(MediaStreamTrack):
    """An audio track of 20 ms s16 stereo frames paced in real time: recv()
    returns frame k at start + k x 20 ms (monotonic). `frame_for(k)` gives
    the PCM bytes; `on_frame(k, t)` is told when frame k is handed out."""

    kind = "audio"

    def __init__(self, frame_for, on_frame=None):
        super().__init__()
        self.frame_for = frame_for
        self.on_frame = on_frame
        self.k = 0
        self.start = None

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        else:
            wait = self.start + self.k * FRAME / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        k = self.k
        self.k += 1
        frame = av.AudioFrame(format="s16", layout="stereo", samples=FRAME)
        frame.planes[0].update(self.frame_for(k))
        frame.sample_rate = RATE
        frame.pts = k * FRAME
        frame.time_base = fractions.Fraction(1, RATE)
        if self.on_frame is not None:
            self.on_frame(k, time.monotonic())
        return frame


async def whip_post(pc, url, token):
    """POSTs pc's complete offer; sets the answer; returns the Location."""
    await pc.setLocalDescription(await pc.createOffer())
    status, headers, body = await in_thread(
        request, "POST", url, token, pc.localDescription.sdp.encode(), "application/sdp"
    )
    if status != 201:
        raise RuntimeError(f"POST answered {status}: {body.decode(errors='replace')}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body.decode(), type="answer"))
    return urllib.parse.urljoin(url, headers.get("Location", ""))


def percentile(values, p):
    """Nearest-rank percentile."""
    values = sorted(values)
    return values[min(len(values) - 1, max(0, -(-p * len(values) // 100) - 1))]


def summary(values):
    if not values:
        return None
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 1),
        "p99": round(percentile(values, 99), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


class OnsetDetector:
    """Finds onsets in a stream of s16 frames (left channel): a sample above
    THRESHOLD after QUIET_BEFORE samples below it; then classifies the burst
    by the zero crossings of the next CLASSIFY samples (across frames).
    `found` collects (ctx of the onset's frame, offset in it, burst class)."""

    def __init__(self):
        self.quiet = 0
        self.pending = None  # [ctx, offset, samples]
        self.found = []

    def feed(self, data, channels, ctx):
        samples = array.array("h")
        samples.frombytes(data)
        for i in range(0, len(samples), channels):
            x = samples[i]
            if self.pending is not None:
                self.pending[2].append(x)
                if len(self.pending[2]) >= CLASSIFY:
                    self.classify()
            if abs(x) > THRESHOLD:
                if self.quiet >= QUIET_BEFORE and self.pending is None:
                    self.pending = [ctx, i // channels, [x]]
                self.quiet = 0
            else:
                self.quiet += 1

    def classify(self):
        ctx, at, xs = self.pending
        crossings = sum(1 for a, b in zip(xs, xs[1:]) if (a < 0) != (b < 0))
        self.found.append((ctx, at, min(3, max(0, round(crossings / 10) - 1))))
        self.pending = None


def match(clicks, onsets, interval):
    """Pairs clicks [(n, t_click)] with onsets [(t_onset, cls, ...)]: for
    each click the earliest unused onset of its class at most 4 intervals
    after it. Returns [(t_click, onset)] and the unmatched click count."""
    used, pairs, unmatched = set(), [], 0
    for n, t_click in clicks:
        j = next((j for j, o in enumerate(onsets) if j not in used and o[1] == n % 4
                  and 0 <= o[0] - t_click < 4 * interval), None)
        if j is None:
            unmatched += 1
            continue
        used.add(j)
        pairs.append((t_click, onsets[j]))
    return pairs, unmatched


# --- hooks into aiortc: packet send and receive instants -------------------

sent_rtp = []  # (monotonic, ssrc, rtp timestamp) of every RTP packet sent
received_rtp = {}  # (ssrc, rtp timestamp) -> monotonic, first arrival
first_rtp = {}  # ssrc -> rtp timestamp of its first packet (aiortc's pts 0)

_send_rtp = RTCDtlsTransport._send_rtp


async def _hooked_send_rtp(self, data):
    t = time.monotonic()
    await _send_rtp(self, data)
    if len(data) >= 12:
        sent_rtp.append((t, int.from_bytes(data[8:12], "big"), int.from_bytes(data[4:8], "big")))


RTCDtlsTransport._send_rtp = _hooked_send_rtp

_handle_rtp = RTCRtpReceiver._handle_rtp_packet


async def _hooked_handle_rtp(self, packet, arrival_time_ms):
    received_rtp.setdefault((packet.ssrc, packet.timestamp), time.monotonic())
    first_rtp.setdefault(packet.ssrc, packet.timestamp)
    await _handle_rtp(self, packet, arrival_time_ms)


RTCRtpReceiver._handle_rtp_packet = _hooked_handle_rtp


# --- latency ---------------------------------------------------------------


async def follow_program(base, stop, onsets, errors):
    """LL-HLS client of BASE/opus/live.m3u8: blocking reload for the part
    after the newest one listed, GET every new part, decode (PyAV, one
    decoder for the whole stream), append (download end, sample offset in
    part, part URI) per onset."""
    playlist_url = f"{base}/opus/live.m3u8"
    # a broadcast just started lists its playlist after its first part
    for _ in range(100):
        status, _, body = await in_thread(request, "GET", playlist_url)
        if status == 200 or stop.is_set():
            break
        await asyncio.sleep(0.1)
    if status != 200:
        errors.append(f"program playlist: {status}")
        return
    status, _, init = await in_thread(request, "GET", f"{base}/opus/init.mp4")
    if status != 200:
        errors.append(f"program init: {status}")
        return
    seen = set()
    first = True
    decoder = None
    resampler = av.AudioResampler(format="s16", layout="stereo", rate=RATE)
    detector = OnsetDetector()
    while not stop.is_set():
        text = body.decode()
        msn = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))
        lines = text.splitlines()
        segments = sum(1 for line in lines if line.startswith("#EXTINF"))
        # parts after the last complete segment
        tail = lines[max([i for i, l in enumerate(lines) if l.startswith("#EXTINF")] + [-1]) + 1:]
        parts_open = sum(1 for line in tail if line.startswith("#EXT-X-PART:"))
        uris = [re.search(r'URI="([^"]+)"', l).group(1) for l in lines if l.startswith("#EXT-X-PART:")]
        for uri in uris:
            if uri in seen:
                continue
            seen.add(uri)
            if first:
                continue  # parts already out when we start: not timed
            status, _, media = await in_thread(request, "GET", urllib.parse.urljoin(playlist_url, uri))
            t = time.monotonic()
            if status != 200:
                errors.append(f"part {uri}: {status}")
                continue
            try:
                container = av.open(io.BytesIO(init + media), format="mp4")
                stream = container.streams.audio[0]
                if decoder is None:
                    decoder = av.CodecContext.create(stream.codec_context.name, "r")
                    if stream.codec_context.extradata:
                        decoder.extradata = stream.codec_context.extradata
                offset = 0
                for packet in container.demux(stream):
                    if packet.size == 0:
                        continue
                    for frame in decoder.decode(packet):
                        for pcm in resampler.resample(frame):
                            data = bytes(pcm.planes[0])[: pcm.samples * 4]
                            detector.feed(data, 2, t)
                            offset += pcm.samples
                onsets.extend((t_part, cls) for t_part, _, cls in detector.found)
                detector.found.clear()
                container.close()
            except Exception as error:  # noqa: BLE001 - reported, run goes on
                errors.append(f"part {uri}: {error}")
        first = False
        # the next part: in the open segment (msn + segments), index parts_open
        query = f"_HLS_msn={msn + segments}&_HLS_part={parts_open}"
        status, _, body = await in_thread(request, "GET", f"{playlist_url}?{query}")
        if status != 200:
            errors.append(f"blocking reload {query}: {status}")
            await asyncio.sleep(0.1)
            status, _, body = await in_thread(request, "GET", playlist_url)


async def poll_depth(url, token, host, stop, depths, calm):
    """Every 500 ms: host's LiveFeed depth while on air into `depths` as
    (t, ms); `calm[0]`: the last poll at which no host had underrun yet."""
    while not stop.is_set():
        status, _, body = await in_thread(request, "GET", f"{url}/control/hosts", token)
        if status == 200:
            listed = json.loads(body)
            for h in listed:
                if h.get("name") == host and h.get("state") == "on-air":
                    depths.append((time.monotonic(), h.get("depth_ms")))
            if not any(h.get("underruns") for h in listed):
                calm[0] = time.monotonic()
        await asyncio.sleep(0.5)


async def latency(args):
    base = args.url.rsplit("/whip", 1)[0]
    period = round(args.interval * RATE / FRAME)  # frames between clicks
    bursts = [
        stereo_frame(
            [BURST_AMPLITUDE * math.sin(2 * math.pi * hz * i / RATE) for i in range(BURST_SAMPLES)]
            + [0.0] * (FRAME - BURST_SAMPLES)
        )
        for hz in BURST_HZ
    ]
    clicks = {}  # frame index -> monotonic when handed to aiortc
    # The first click once B has heard 1 s of return (both hosts on air);
    # then CLICKS clicks, then 3 s for the last one to come through.
    first = [None]
    done = asyncio.Event()
    frames_b = [0]

    def click_index(k):
        if first[0] is None:
            if frames_b[0] < 50:
                return None
            first[0] = k + 1
        n, r = divmod(k - first[0], period)
        return n if k >= first[0] and r == 0 and n < args.clicks else None

    def a_frame(k):
        n = click_index(k)
        return SILENCE if n is None else bursts[n % 4]

    def a_handed(k, t):
        if click_index(k) is not None:
            clicks[k] = (click_index(k), t)
        if first[0] is not None and k >= first[0] + period * args.clicks + 150:
            done.set()

    pc_a, pc_b = RTCPeerConnection(), RTCPeerConnection()
    track_a = PacedTrack(a_frame, a_handed)
    track_b = PacedTrack(lambda k: SILENCE)
    pc_a.addTransceiver(track_a, direction="sendonly")
    pc_b.addTransceiver(track_b, direction="sendrecv")
    detector = OnsetDetector()

    async def receive(track):
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            t = time.monotonic()
            frames_b[0] += 1
            channels = len(frame.layout.channels)
            data = bytes(frame.planes[0])[: frame.samples * channels * 2]
            detector.feed(data, channels, (t, frame.pts))

    tasks = []

    @pc_b.on("track")
    def on_track(track):
        if track.kind == "audio":
            tasks.append(asyncio.ensure_future(receive(track)))

    loc_a = await whip_post(pc_a, args.url, args.token_a)
    loc_b = await whip_post(pc_b, args.url, args.token_b)
    stop = asyncio.Event()
    depths, program_onsets, errors, calm = [], [], [], [0.0]
    if args.admin_token:
        tasks.append(asyncio.ensure_future(
            poll_depth(base.rsplit("/", 1)[0], args.admin_token, args.host_a, stop, depths, calm)))
    if args.program:
        tasks.append(asyncio.ensure_future(follow_program(base, stop, program_onsets, errors)))
    await asyncio.wait_for(done.wait(), timeout=args.clicks * args.interval + 40)
    stop.set()
    for loc, token in ((loc_a, args.token_a), (loc_b, args.token_b)):
        await in_thread(request, "DELETE", loc, token)
    await pc_a.close()
    await pc_b.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    # -- analysis
    ssrc_a = pc_a.getSenders()[0]._ssrc
    click_list = [v for _, v in sorted(clicks.items())]  # (n, t_click)
    sent_a = [(t, ts) for t, ssrc, ts in sent_rtp if ssrc == ssrc_a]
    # onsets in B's return: (onset instant, class, frame out, offset, pts)
    onsets = [(t + at / RATE, cls, t, at, pts) for (t, pts), at, cls in detector.found]
    pairs, unmatched = match(click_list, onsets, args.interval)
    result = {"clicks": len(click_list), "onsets": len(onsets), "matched": len(pairs),
              "unmatched_clicks": unmatched, "spurious_onsets": len(onsets) - len(pairs),
              "frames_received": frames_b[0]}
    total_ms, send_ms, onair_ms, recv_ms, offset_ms = [], [], [], [], []
    socket_ms, steady_ms = [], []
    for t_click, (t_onset, _, t_out, at, pts) in pairs:
        total_ms.append(1000 * (t_onset - t_click))
        # steady: heard before any host's feed first ran dry (a stalled
        # publisher; after it the feed holds the burst that followed)
        if t_onset <= calm[0]:
            steady_ms.append(total_ms[-1])
        offset_ms.append(1000 * at / RATE)
        t_sent = next((t for t, _ in sent_a if t >= t_click), None)
        if t_sent is not None:
            send_ms.append(1000 * (t_sent - t_click))
        # aiortc's frame pts counts from the first packet's RTP timestamp
        t_in = next(
            (t for (ssrc, ts), t in received_rtp.items()
             if ssrc != ssrc_a and ts == (first_rtp[ssrc] + pts) & 0xFFFFFFFF),
            None,
        )
        if t_in is not None:
            recv_ms.append(1000 * (t_out - t_in))
            socket_ms.append(1000 * (t_in + at / RATE - t_click))
            if t_sent is not None:
                onair_ms.append(1000 * (t_in - t_sent))
    result["return_ms"] = summary(total_ms)
    result["return_at_socket_ms"] = summary(socket_ms)
    result["return_steady_ms"] = summary(steady_ms)
    result["split_ms"] = {
        "a_send": summary(send_ms),
        "onair": summary(onair_ms),
        "b_receive": summary(recv_ms),
        "onset_in_frame": summary(offset_ms),
    }
    result["depth_ms"] = summary([d for _, d in depths])
    prog = []
    if args.program:
        prog_pairs, prog_unmatched = match(click_list, program_onsets, args.interval)
        prog = [1000 * (t_part - t_click) for t_click, (t_part, _) in prog_pairs]
        result["program_onsets"] = len(program_onsets)
        result["program_unmatched"] = prog_unmatched
        result["program_ms"] = summary(prog)
        result["program_errors"] = errors[:5]
    emit(**result)
    # the raw values, for pooling over runs
    result.update(_total=total_ms, _steady=steady_ms, _socket=socket_ms, _depth=[d for _, d in depths],
                  _program=prog,
                  _split={"a_send": send_ms, "onair": onair_ms, "b_receive": recv_ms, "onset_in_frame": offset_ms})
    with open(args.out, "w") as out:
        json.dump(result, out)
    # most clicks must be heard; a few lost to underruns are reported
    if len(pairs) < 0.8 * len(click_list):
        raise SystemExit(2)


# --- hosts (CPU) -----------------------------------------------------------


async def host(session, url, token, sendrecv, hz, stop):
    period = RATE / hz
    tone = stereo_frame([0.25 * math.sin(2 * math.pi * i / period) for i in range(FRAME)])
    pc = RTCPeerConnection()
    pc.addTransceiver(PacedTrack(lambda k: tone), direction="sendrecv" if sendrecv else "sendonly")
    draining = []

    async def drain(track):
        first = True
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            if first:
                emit(session=session, receiving=True)
                first = False

    @pc.on("track")
    def on_track(track):
        draining.append(asyncio.ensure_future(drain(track)))

    try:
        location = await whip_post(pc, url, token)
        emit(session=session, posted=201)
        await stop.wait()
        status, _, _ = await in_thread(request, "DELETE", location, token)
        emit(session=session, deleted=status)
    finally:
        await pc.close()
        for task in draining:
            task.cancel()


async def hosts(args):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sessions = [
        asyncio.ensure_future(host(i, args.url, t, args.sendrecv, args.first_tone + 50 * i, stop))
        for i, t in enumerate(args.token)
    ]
    done, pending = await asyncio.wait(sessions, return_when=asyncio.FIRST_EXCEPTION)
    failed = [t.exception() for t in done if t.exception()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if failed:
        emit(error=str(failed[0]))
        raise SystemExit(2)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--url", required=True)
    lat.add_argument("--token-a", required=True)
    lat.add_argument("--token-b", required=True)
    lat.add_argument("--host-a", default="alice")
    lat.add_argument("--clicks", type=int, default=40)
    lat.add_argument("--interval", type=float, default=0.7)
    lat.add_argument("--admin-token")
    lat.add_argument("--program", action="store_true")
    lat.add_argument("--out", required=True)
    h = sub.add_parser("hosts")
    h.add_argument("--url", required=True)
    h.add_argument("--token", required=True, action="append")
    mode = h.add_mutually_exclusive_group(required=True)
    mode.add_argument("--sendrecv", action="store_true")
    mode.add_argument("--sendonly", action="store_true")
    h.add_argument("--first-tone", type=float, default=200.0)
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    asyncio.run(latency(args) if args.mode == "latency" else hosts(args))
