#!/usr/bin/python3
"""A small independent RTSP camera for the black-box tests (GStreamer's gst-rtsp-server).

It serves the fixtures of tests/fixtures/ in a loop, paced in real time at 25 fps, so the
gateway's RTSP client and the test helpers meet a server that passerelle did not write.
Started by tests/support/mod.rs (`RtspSource`), never by hand in CI.

Mounts (each client gets its own pipeline, starting at the first IDR):
  /h264-main, /h264-baseline, /h265-main          video only
  /h264-main-audio, /h265-main-audio              video + G.711 A-law audio (PCMA/8000)
  /h264-bframes   when DIR holds h264-bframes.mkv: played once from its container,
                  so pictures keep their presentation times (B-frames go out of order
                  as a real camera's do; a raw stream has no such times)

Usage: rtsp_source.py --fixtures DIR --ready-file FILE [--port N]
Once listening it writes {"port": N} to FILE (atomically, by rename).
It exits when its parent dies (the harness also starts it under `setpriv --pdeathsig`).

Needs python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,bad}.
"""

import argparse
import json
import os
import re
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

# mount name -> (fixture file, codec)
VIDEO = {
    "h264-main": ("h264-main.h264", "h264"),
    "h264-baseline": ("h264-baseline.h264", "h264"),
    "h265-main": ("h265-main.h265", "h265"),
}
FRAME_NS = Gst.SECOND // 25  # the fixtures are 25 fps (scripts/make-fixtures)


def access_units(data, codec):
    """Splits an Annex B stream into access units (start codes kept).

    A raw elementary stream carries no timestamps and GStreamer's parsers leave the PTS
    unset, so the source stamps each access unit itself. An access unit starts at the
    first VCL NAL unit of a picture (first_mb_in_slice == 0 for H.264, ITU-T H.264
    7.3.3; first_slice_segment_in_pic_flag for H.265, ITU-T H.265 7.3.6.1) together with
    the parameter sets and SEI that precede it.
    """
    starts = [m.start() for m in re.finditer(b"\x00\x00\x01", data)]
    units = []
    pending = b""
    current = b""
    for i, s in enumerate(starts):
        begin = s - 1 if s > 0 and data[s - 1] == 0 else s
        end = starts[i + 1] if i + 1 < len(starts) else len(data)
        if end < len(data) and data[end - 1] == 0:
            end -= 1
        nal = data[begin:end]
        header = s + 3
        if codec == "h264":
            kind = data[header] & 0x1F
            vcl = 1 <= kind <= 5
            first = vcl and header + 1 < len(data) and data[header + 1] & 0x80
        else:
            kind = (data[header] >> 1) & 0x3F
            vcl = kind <= 31
            first = vcl and header + 2 < len(data) and data[header + 2] & 0x80
        if not vcl:
            pending += nal
        elif first:
            if current:
                units.append(current)
            current = pending + nal
            pending = b""
        else:
            current += pending + nal
            pending = b""
    if current:
        units.append(current)
    return units


def launch_line(codec, audio, pcma):
    # The queues decouple the two branches and `identity sync=true` paces the audio file
    # like a live source: without them a client that sets up the video alone (as
    # passerelle does) stalled in about half the sessions, its pipeline blocked on the
    # audio branch nobody reads.
    caps = f"video/x-{codec},stream-format=byte-stream,alignment=au"
    video = (
        f'appsrc name=video is-live=false format=time caps="{caps}" '
        f"! {codec}parse ! queue ! rtp{codec}pay name=pay0 pt=96 config-interval=-1"
    )
    if not audio:
        return f"( {video} )"
    sound = (
        f'multifilesrc location="{pcma}" loop=true '
        "! rawaudioparse use-sink-caps=false format=alaw sample-rate=8000 num-channels=1 "
        "! identity sync=true ! queue leaky=downstream max-size-buffers=8 "
        "! rtppcmapay name=pay1 pt=8"
    )
    return f"( {video} {sound} )"


class Feeder:
    """Pushes one client's access units into its appsrc, in a loop, 40 ms apart."""

    def __init__(self, appsrc, units):
        self.units = units
        self.n = 0
        appsrc.connect("need-data", self.need_data)

    def need_data(self, appsrc, _length):
        au = self.units[self.n % len(self.units)]
        buf = Gst.Buffer.new_wrapped(au)
        buf.pts = buf.dts = self.n * FRAME_NS
        buf.duration = FRAME_NS
        self.n += 1
        appsrc.emit("push-buffer", buf)


def container_launch_line(path):
    return (
        f'( filesrc location="{path}" ! matroskademux ! h264parse '
        "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )


class Factory(GstRtspServer.RTSPMediaFactory):
    def __init__(self, units, codec, audio, pcma):
        super().__init__()
        self.units = units
        self.set_launch(launch_line(codec, audio, pcma))
        # Each client gets its own pipeline, starting at the first IDR.
        self.set_shared(False)
        self.feeders = []
        self.connect("media-configure", self.configure)

    def configure(self, _factory, media):
        appsrc = media.get_element().get_child_by_name("video")
        feeder = Feeder(appsrc, self.units)
        # Kept alive with the media; dropped when the media is unprepared.
        self.feeders.append(feeder)
        media.connect("unprepared", lambda _m: self.feeders.remove(feeder))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixtures", required=True)
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    units = {}
    for name, (file, codec) in VIDEO.items():
        with open(os.path.join(args.fixtures, file), "rb") as f:
            units[name] = access_units(f.read(), codec)
    pcma = os.path.join(args.fixtures, "audio.pcma")
    for name in VIDEO:
        for audio in (False, True):
            if audio and name == "h264-baseline":
                continue
            factory = Factory(units[name], VIDEO[name][1], audio, pcma)
            mounts.add_factory("/" + name + ("-audio" if audio else ""), factory)
    bframes = os.path.join(args.fixtures, "h264-bframes.mkv")
    if os.path.exists(bframes):
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(container_launch_line(bframes))
        factory.set_shared(False)
        mounts.add_factory("/h264-bframes", factory)

    if server.attach(None) == 0:
        print("rtsp_source: could not listen", file=sys.stderr)
        return 1

    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"port": server.get_bound_port()}, f)
    os.rename(tmp, args.ready_file)

    loop = GLib.MainLoop()
    parent = os.getppid()

    def watch_parent():
        if os.getppid() != parent:
            loop.quit()
            return False
        return True

    GLib.timeout_add(500, watch_parent)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
