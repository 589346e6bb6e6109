#!/usr/bin/env python3
"""Publish a WAV file to a WHIP endpoint (RFC 9725) with aiortc.

The client does the WHIP HTTP exchange itself (urllib, run off the event
loop): POST the complete offer (no trickle ICE; RFC 9725 §4.2) with
`Content-Type: application/sdp` and the bearer token, expect
`201 Created` with the answer and a `Location`, and at the end DELETE that
Location (RFC 9725 §4.2.2) unless told to vanish.

Reports go to stdout, one JSON object per line:
  {"posted": 201, "location": "<absolute URL>"}   the POST's status (and,
                                                  with --print-location,
                                                  the session URL)
  {"state": "<state>"}                            every connection state change
  {"receiving": <n>}                              the first received audio
                                                  frame (with --receive)
  {"deleted": <status>}                           the DELETE's status
  {"error": "<text>", ...}                        then exit status 2

The publisher stops after --duration seconds, on a line "stop" on stdin, or
when stdin closes (whichever comes first). A connection the server ends
("closed" or "failed") is reported and ends the script without a DELETE.

Only 127.0.0.1 is offered as a host candidate, so ICE stays on loopback.

With --receive OUT.wav the audio m-line is offered sendrecv and the audio
the server sends back (the host's return feed) is written to OUT.wav as
it arrives: 16-bit stereo at 48 kHz, frames in arrival order. With --whep
(and --url naming a WHEP endpoint) nothing is published: the m-line is
recvonly and the WAV argument is "-"; only --receive's recording is made.

Usage: whip_publish.py TONE.wav --url URL [--token SECRET] [--duration S]
                       [--print-location] [--vanish] [--print-offer]
                       [--receive OUT.wav] [--whep]
"""

import argparse
import asyncio
import json
import os
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import wave

import aioice.ice
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

# aioice leaves loopback out of its host candidates; the endpoint under test
# listens on 127.0.0.1 only.
aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"]

HTTP_TIMEOUT_S = 10


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def request(method, url, token, body=None, content_type=None):
    """One HTTP request; returns (status, headers, body) for any status."""
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if content_type is not None:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as reply:
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


async def in_thread(function, *args):
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


def watch_stdin(loop, stop):
    """Sets `stop` on a line "stop" or when stdin closes. A daemon thread, so
    a blocked read never holds up the exit."""
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    loop.call_soon_threadsafe(stop.set)


async def wait_for_stop(duration, ended):
    """Returns "stop" when the duration passes or stdin says so, "ended"
    when the connection ends first."""
    stop = asyncio.Event()
    threading.Thread(
        target=watch_stdin, args=(asyncio.get_running_loop(), stop), daemon=True
    ).start()
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(ended.wait())]
    if duration is not None:
        waiters.append(asyncio.ensure_future(asyncio.sleep(duration)))
    _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in pending:
        waiter.cancel()
    return "ended" if ended.is_set() else "stop"


async def record(track, path):
    """Writes every frame of `track` to the WAV file at `path` until the
    track ends; reports the first one."""
    with wave.open(path, "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(48000)
        first = True
        while True:
            try:
                frame = await track.recv()
            except Exception:  # MediaStreamError: the track ended
                return
            if frame.format.name != "s16" or frame.sample_rate != 48000:
                emit({"error": f"unexpected frame {frame.format.name} {frame.sample_rate} Hz"})
                return
            channels = len(frame.layout.channels)
            data = bytes(frame.planes[0])[: frame.samples * channels * 2]
            if channels == 1:
                # Duplicate mono into both channels.
                data = b"".join(data[i : i + 2] * 2 for i in range(0, len(data), 2))
            out.writeframes(data)
            if first:
                emit({"receiving": frame.samples})
                first = False


async def main(args):
    pc = RTCPeerConnection()
    ended = asyncio.Event()

    @pc.on("connectionstatechange")
    async def on_state():
        emit({"state": pc.connectionState})
        if pc.connectionState in ("closed", "failed"):
            ended.set()

    recording = []

    @pc.on("track")
    def on_track(track):
        if args.receive and track.kind == "audio":
            recording.append(asyncio.ensure_future(record(track, args.receive)))

    if args.whep:
        pc.addTransceiver("audio", direction="recvonly")
    else:
        player = MediaPlayer(args.wav, loop=True)
        pc.addTransceiver(player.audio, direction="sendrecv" if args.receive else "sendonly")
    # Resolves once ICE gathering is complete: the offer has its candidates.
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    if args.print_offer:
        sys.stdout.write(offer)
        sys.stdout.flush()
        pc.remove_all_listeners("connectionstatechange")  # the offer only
        await pc.close()
        return

    status, headers, body = await in_thread(
        request, "POST", args.url, args.token, offer.encode(), "application/sdp"
    )
    if status != 201:
        emit({"error": "POST refused", "status": status, "body": body.decode(errors="replace")})
        await pc.close()
        raise SystemExit(2)
    location = urllib.parse.urljoin(args.url, headers.get("Location", ""))
    report = {"posted": status}
    if args.print_location:
        report["location"] = location
    emit(report)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body.decode(), type="answer"))

    why = await wait_for_stop(args.duration, ended)
    if args.vanish:
        # Gone like a crashed browser: no DELETE, no DTLS close_notify.
        os._exit(0)
    if why == "stop":
        status, _, _ = await in_thread(request, "DELETE", location, args.token)
        emit({"deleted": status})
    await pc.close()
    for task in recording:
        await task
    emit({"state": "closed-by-script"})


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wav", help="the WAV file to play (looped)")
    parser.add_argument("--url", help="the WHIP endpoint, http://HOST/STREAM/whip")
    parser.add_argument("--token", help="bearer token (the host's secret)")
    parser.add_argument("--duration", type=float, help="seconds to publish")
    parser.add_argument("--print-location", action="store_true",
                        help="report the session URL from Location")
    parser.add_argument("--vanish", action="store_true",
                        help="at the end exit at once: no DELETE, no DTLS close")
    parser.add_argument("--receive", metavar="OUT.wav",
                        help="offer sendrecv and record the audio sent back")
    parser.add_argument("--whep", action="store_true",
                        help="only receive (a WHEP return session): needs --receive")
    parser.add_argument("--print-offer", action="store_true",
                        help="print the SDP offer and exit without publishing")
    args = parser.parse_args()
    if not args.print_offer and not args.url:
        parser.error("--url is required to publish")
    if args.whep and not args.receive:
        parser.error("--whep needs --receive")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
