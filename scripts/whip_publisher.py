#!/usr/bin/env python3
"""Publish a WAV file to a WHIP endpoint (RFC 9725) as one or more hosts.

Each --token starts one WebRTC session (aiortc, a sendonly Opus track) in
this one process, so several hosts cost one Python interpreter. The file is
decoded once and shared by every session (MediaRelay); each session still
encodes Opus, packetises, encrypts (SRTP) and sends on its own.

Per session, the WHIP exchange is done with urllib (off the event loop): the
offer is POSTed once ICE gathering is complete (no trickle ICE, RFC 9725
§4.2) with `Content-Type: application/sdp` and `Authorization: Bearer
TOKEN`, a `201 Created` with the answer and a `Location` is required, and
after --duration seconds, or on SIGTERM or SIGINT, that Location is DELETEd
(RFC 9725 §4.2.2).

Reports go to stdout, one JSON object per line, each with "session" (the
token's index):
  {"posted": 201}            the POST's status
  {"state": "<state>"}       every connection state change
  {"deleted": <status>}      the DELETE's status
  {"error": "<text>"}        then exit status 2 (any session failing fails all)

Only 127.0.0.1 is offered as a host candidate, so ICE stays on loopback.

Usage: whip_publisher.py TONE.wav --url URL --token SECRET [--token ...]
                         [--duration S]
"""

import argparse
import asyncio
import json
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request

import aioice.ice
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer, MediaRelay

# aioice leaves loopback out of its host candidates; the endpoint under test
# listens on 127.0.0.1.
aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"]

HTTP_TIMEOUT_S = 10


class Failed(Exception):
    """A session could not start or ended early."""


def emit(session, **fields):
    sys.stdout.write(json.dumps({"session": session, **fields}) + "\n")
    sys.stdout.flush()


def request(method, url, token, body=None, content_type=None):
    """One HTTP request; returns (status, headers, body) for any status."""
    headers = {"Authorization": f"Bearer {token}"}
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


async def publish(session, track, url, token, stop):
    """One host: POST the offer, play until `stop` is set, DELETE."""
    pc = RTCPeerConnection()
    ended = asyncio.Event()

    @pc.on("connectionstatechange")
    async def on_state():
        emit(session, state=pc.connectionState)
        if pc.connectionState in ("closed", "failed"):
            ended.set()

    try:
        pc.addTransceiver(track, direction="sendonly")
        # Resolves once ICE gathering is complete: the offer has its candidates.
        await pc.setLocalDescription(await pc.createOffer())
        status, headers, body = await in_thread(
            request, "POST", url, token, pc.localDescription.sdp.encode(), "application/sdp"
        )
        emit(session, posted=status)
        if status != 201:
            raise Failed(f"POST answered {status}: {body.decode(errors='replace')}")
        location = urllib.parse.urljoin(url, headers.get("Location", ""))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body.decode(), type="answer"))
        ending = asyncio.ensure_future(ended.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([ending, stopping], return_when=asyncio.FIRST_COMPLETED)
        ending.cancel()
        stopping.cancel()
        if not stop.is_set():
            raise Failed(f"the connection ended early ({pc.connectionState})")
        status, _, _ = await in_thread(request, "DELETE", location, token)
        emit(session, deleted=status)
        if status not in (200, 204):
            raise Failed(f"DELETE answered {status}")
    finally:
        await pc.close()


async def main(args):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if args.duration is not None:
        loop.call_later(args.duration, stop.set)
    player = MediaPlayer(args.wav, loop=True)
    relay = MediaRelay()
    sessions = [
        asyncio.ensure_future(
            publish(i, relay.subscribe(player.audio), args.url, token, stop)
        )
        for i, token in enumerate(args.token)
    ]
    # The first failure ends the run: a benchmark with a host missing is void.
    done, pending = await asyncio.wait(sessions, return_when=asyncio.FIRST_EXCEPTION)
    failed = [(sessions.index(t), t.exception()) for t in done if t.exception()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    player.audio.stop()
    if failed:
        for session, error in failed:
            emit(session, error=str(error))
        raise SystemExit(2)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wav", help="the WAV file to play (looped)")
    parser.add_argument("--url", required=True, help="the WHIP endpoint, http://HOST/STREAM/whip")
    parser.add_argument("--token", required=True, action="append",
                        help="a host's bearer token; one session per --token")
    parser.add_argument("--duration", type=float,
                        help="seconds to publish (default: until SIGTERM or SIGINT)")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
