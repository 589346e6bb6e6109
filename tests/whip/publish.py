#!/usr/bin/env python3
"""Publish a WAV file as a sendonly Opus WebRTC track with aiortc.

The signalling runs over stdio, one JSON object per line:
  stdout: {"offer": "<sdp>"}          once ICE gathering is complete
  stdin:  {"answer": "<sdp>"}         the answerer's SDP
  stdout: {"state": "<state>"}        every connection state change
  stdin:  {"mute": true}              stop sending RTP; ICE and DTLS stay up
  stdin:  {"close": true} or EOF      close the peer connection and exit

Only 127.0.0.1 is offered as a host candidate, so ICE stays on loopback.

Usage: publish.py TONE.wav
"""

import asyncio
import json
import sys

import aioice.ice
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

# aioice leaves loopback out of its host candidates; the answerer listens on
# 127.0.0.1 only.
aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"]


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def read_line(loop):
    return await loop.run_in_executor(None, sys.stdin.readline)


async def main(wav):
    loop = asyncio.get_running_loop()
    pc = RTCPeerConnection()

    @pc.on("connectionstatechange")
    async def on_state():
        emit({"state": pc.connectionState})

    player = MediaPlayer(wav, loop=True)
    transceiver = pc.addTransceiver(player.audio, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    emit({"offer": pc.localDescription.sdp})

    line = await read_line(loop)
    if not line:
        raise SystemExit("no answer on stdin")
    answer = json.loads(line)["answer"]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    # Run until told to close (or stdin closes).
    while True:
        line = await read_line(loop)
        if not line:
            break
        command = json.loads(line)
        if command.get("close"):
            break
        if command.get("mute"):
            # aiortc has no public "pause": a disabled sender reads its track
            # but sends no RTP, while consent checks and RTCP go on.
            transceiver.sender._enabled = False
            emit({"state": "muted"})
    await pc.close()
    emit({"state": "closed-by-script"})


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: publish.py TONE.wav")
    asyncio.run(main(sys.argv[1]))
