#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (committed; rerun to regenerate).

A few realistic inputs per target, in each target's input format (see the doc comment
at the top of fuzz_targets/<target>.rs): RTSP requests as players send them, control
messages as a gateway writes them, RTP packets cut from tests/fixtures, RoQ datagrams
and streams, and the demo kit's SNCF policy (src/demo.rs `sncf_policy()`).

Usage: python3 fuzz/make_corpus.py   (from anywhere; needs only the standard library)
"""

import base64
import hashlib
import pathlib
import re
import struct

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"

# Control byte of chunked targets (fuzz/src/lib.rs `Control`): bits 0-1 chunking mode
# (0 whole, 1 byte by byte, 2 up to 16 bytes, 3 up to 512), bit 2 the target's flag,
# bits 3-7 the chunk-size seed.
WHOLE, BYTES, SMALL, LARGE = 0, 1, 2, 3
FLAG = 0b100


def seed(n):
    return (n & 0x1F) << 3


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


# --- rtsp_demux --------------------------------------------------------------------------

def req(method, uri, cseq, *headers, body=b""):
    lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {cseq}", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


URI = "rtsp://gw.example:8554/metz/cam-1"
BASIC = "Authorization: Basic " + base64.b64encode(b"alice:wonderland").decode()
UA = "User-Agent: Lavf59.27.100"


def rtsp_demux():
    options = req("OPTIONS", URI, 1, UA)
    describe = req("DESCRIBE", URI, 2, "Accept: application/sdp", UA)
    describe_basic = req("DESCRIBE", URI, 3, "Accept: application/sdp", BASIC, UA)
    ha2 = hashlib.md5(f"DESCRIBE:{URI}".encode()).hexdigest()
    nonce = "0000000000000000" + "0" * 32
    digest = (
        'Authorization: Digest username="alice", realm="passerelle", '
        f'nonce="{nonce}", uri="{URI}", response="{ha2}", algorithm=MD5, '
        'qop=auth, nc=00000001, cnonce="0a4f113b"'
    )
    describe_digest = req("DESCRIBE", URI, 4, "Accept: application/sdp", digest, UA)
    setup_tcp = req(
        "SETUP", URI + "/track=0", 5, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1", BASIC
    )
    setup_udp = req(
        "SETUP", URI + "/track=0", 5, "Transport: RTP/AVP;unicast;client_port=5000-5001", BASIC
    )
    play = req("PLAY", URI + "/", 6, "Session: SESSION", "Range: npt=0.000-", BASIC)
    rr = bytes([0x81, 201, 0, 7]) + struct.pack(">I", 0x1234) + bytes(24)
    interleaved = b"$\x01" + struct.pack(">H", len(rr)) + rr
    keepalive = req("GET_PARAMETER", URI + "/", 7, "Session: SESSION")
    pause = req("PAUSE", URI + "/", 8, "Session: SESSION", BASIC)
    teardown = req("TEARDOWN", URI + "/", 9, "Session: SESSION", BASIC)

    write("rtsp_demux", "options", bytes([WHOLE]) + options)
    write("rtsp_demux", "describe", bytes([WHOLE]) + describe)
    write("rtsp_demux", "describe-basic", bytes([SMALL | seed(3)]) + describe_basic)
    write("rtsp_demux", "describe-digest", bytes([LARGE | seed(5)]) + describe_digest)
    write("rtsp_demux", "setup-udp", bytes([WHOLE]) + describe_basic + setup_udp + play + teardown)
    write(
        "rtsp_demux",
        "session-tcp",
        bytes([SMALL | seed(9)])
        + options
        + describe_basic
        + setup_tcp
        + play
        + interleaved
        + keepalive
        + b"\r\n"
        + pause
        + teardown,
    )
    write(
        "rtsp_demux",
        "set-parameter-small-limit",
        bytes([BYTES | FLAG])
        + req("SET_PARAMETER", URI, 10, "Content-Type: text/parameters", body=b"barparam: barstuff\r\n"),
    )


# --- control_frame -------------------------------------------------------------------------

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num, value):
    return varint(num << 3) + varint(value)


def field_bytes(num, value):
    if isinstance(value, str):
        value = value.encode()
    return varint(num << 3 | 2) + varint(len(value)) + value


def control(kind, body):
    msg = field_bytes(kind, body)
    return varint(len(msg)) + msg


def control_frame():
    hello = control(
        1,
        field_varint(1, 1)
        + field_bytes(2, "csu.metz.example")
        + field_bytes(3, "onward")
        + field_bytes(3, "on_request")
        + field_bytes(3, "grant_end")
        + field_varint(4, 7),
    )
    sps, pps = h264_parameter_sets()
    camera = (
        field_bytes(1, "metz-ville/quai-1")
        + field_varint(2, 1)
        + field_bytes(3, sps)
        + field_bytes(3, pps)
        + field_bytes(4, field_varint(1, 1) + field_bytes(2, "ccor.metz.example") + field_varint(3, 4102444800))
        + field_varint(5, 1)
    )
    catalog = control(2, field_bytes(1, camera) + field_bytes(1, field_bytes(1, "woippy/gare") + field_bytes(4, b"")))
    subscribe = control(4, field_varint(1, 1) + field_bytes(2, "metz-ville/quai-1"))
    subscribe_ok = control(5, field_varint(1, 1) + field_varint(2, 4) + field_varint(3, 1) + field_bytes(4, sps) + field_bytes(4, pps))
    subscribe_error = control(6, field_varint(1, 2) + field_varint(2, 1))
    view_open = control(
        8,
        field_varint(1, 3)
        + field_bytes(2, "metz-ville/quai-1")
        + field_bytes(3, "agent-42")
        + field_varint(4, 1)
        + field_bytes(5, "bagarre signalée quai 1")
        + field_bytes(6, "INT-2026-0042")
        + field_bytes(7, "ccor.metz.example"),
    )
    view_answer = control(9, field_varint(1, 3) + field_varint(2, 99))
    keyframe = control(11, field_varint(1, 4))
    ended = control(12, field_varint(1, 4) + field_varint(2, 10))
    checkpoint = control(
        13,
        field_bytes(1, "journal-csu")
        + field_varint(2, 1200)
        + field_bytes(3, hashlib.sha256(b"head").digest())
        + field_varint(4, 1_780_000_000)
        + field_bytes(5, bytes(range(64))),
    )
    write("control_frame", "hello", bytes([WHOLE]) + hello)
    write("control_frame", "link-start", bytes([SMALL | seed(1)]) + hello + catalog + subscribe)
    write("control_frame", "subscribe-ok", bytes([BYTES]) + subscribe_ok + keyframe)
    write("control_frame", "refusals", bytes([LARGE | seed(2)]) + subscribe_error + view_answer + ended)
    write("control_frame", "view-open", bytes([WHOLE]) + view_open + control(10, field_varint(1, 3)))
    write("control_frame", "checkpoint-small-limit", bytes([WHOLE | FLAG]) + checkpoint)
    write("control_frame", "catalog-update", bytes([WHOLE]) + control(3, field_bytes(1, camera)) + control(7, field_varint(1, 4)))


# --- rtp -------------------------------------------------------------------------------

def annex_b(path):
    data = path.read_bytes()
    starts = [m.end() for m in re.finditer(b"\x00\x00\x01", data)]
    nals = []
    for i, s in enumerate(starts):
        e = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        nal = data[s:e]
        # A 4-byte start code leaves its leading zero on the previous unit.
        if i + 1 < len(starts) and nal.endswith(b"\x00"):
            nal = nal[:-1]
        nals.append(nal)
    return nals


def h264_parameter_sets():
    nals = annex_b(ROOT / "tests/fixtures/h264-baseline.h264")
    sps = next(n for n in nals if n[0] & 0x1F == 7)
    pps = next(n for n in nals if n[0] & 0x1F == 8)
    return sps, pps


def rtp_header(seq, ts, marker, pt=96, ssrc=0x5EED5EED):
    return struct.pack(">BBHII", 0x80, (0x80 if marker else 0) | pt, seq, ts, ssrc)


def fu(codec, nal, size):
    """FU-A (H.264) or FU (H.265) fragments of `nal`, `size` data bytes each."""
    if codec == "h264":
        head, data, ntype = bytes([(nal[0] & 0xE0) | 28]), nal[1:], nal[0] & 0x1F
    else:
        head, data, ntype = bytes([(nal[0] & 0x81) | (49 << 1), nal[1]]), nal[2:], (nal[0] >> 1) & 0x3F
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    out = []
    for i, p in enumerate(pieces):
        h = ntype | (0x80 if i == 0 else 0) | (0x40 if i == len(pieces) - 1 else 0)
        out.append(head + bytes([h]) + p)
    return out


def rtp():
    # Control byte: bit 0 codec (0 H.264, 1 H.265), bit 1 marker. Then the maximum payload
    # as two bytes (taken modulo len + 8), then the RTP packet.
    def put(name, codec_bit, marker, max_payload, packet):
        write("rtp", name, bytes([codec_bit | (2 if marker else 0)]) + struct.pack(">H", max_payload) + packet)

    h264 = annex_b(ROOT / "tests/fixtures/h264-baseline.h264")
    sps, pps = h264_parameter_sets()
    idr = next(n for n in h264 if n[0] & 0x1F == 5)
    p_frame = next(n for n in h264 if n[0] & 0x1F == 1)
    stap = bytes([0x18]) + struct.pack(">H", len(sps)) + sps + struct.pack(">H", len(pps)) + pps
    put("h264-stap-a", 0, False, 20, rtp_header(1, 0, False) + stap)
    put("h264-single-p", 0, True, 600, rtp_header(2, 3600, True) + p_frame[:900])
    frags = fu("h264", idr, 1400)
    put("h264-fu-a-start", 0, False, 1100, rtp_header(3, 7200, False) + frags[0])
    put("h264-fu-a-end", 0, True, 300, rtp_header(4, 7200, True) + frags[-1])
    put("h264-single-fits", 0, True, 0xFFFF, rtp_header(5, 10800, True) + sps)

    h265 = annex_b(ROOT / "tests/fixtures/h265-main.h265")
    vps = next(n for n in h265 if (n[0] >> 1) & 0x3F == 32)
    sps5 = next(n for n in h265 if (n[0] >> 1) & 0x3F == 33)
    irap = next(n for n in h265 if 16 <= (n[0] >> 1) & 0x3F <= 21)
    ap = bytes([48 << 1, 1]) + struct.pack(">H", len(vps)) + vps + struct.pack(">H", len(sps5)) + sps5
    put("h265-ap", 1, False, 40, rtp_header(1, 0, False) + ap)
    put("h265-fu-start", 1, False, 700, rtp_header(2, 0, False) + fu("h265", irap, 1400)[0])
    put("h265-single", 1, True, 500, rtp_header(3, 0, True) + irap[:1200])
    # With a padding byte count and a header extension (RFC 3550 §5.1, §5.3.1).
    ext = struct.pack(">HH", 0xBEDE, 1) + bytes([0x10, 0xAA, 0, 0])
    padded = bytes([0xB0, 0xE0]) + rtp_header(6, 14400, True)[2:] + ext + p_frame[:300] + bytes([0, 0, 3])
    put("h264-extension-padding", 0, True, 120, padded)
    # RTCP compound packets, as a player sends them: RR + SDES, PLI, FIR.
    rr = bytes([0x81, 201, 0, 7]) + struct.pack(">I", 0x1234) + bytes(24)
    sdes = bytes([0x81, 202, 0, 3]) + struct.pack(">I", 0x1234) + bytes([1, 5]) + b"alice" + bytes(1)
    pli = bytes([0x81, 206, 0, 2]) + struct.pack(">II", 0x1234, 0x5EED5EED)
    fir = bytes([0x84, 206, 0, 4]) + struct.pack(">II", 0x1234, 0) + struct.pack(">II", 0x5EED5EED, 7 << 24)
    sr = bytes([0x80, 200, 0, 6]) + struct.pack(">IQIII", 0x5EED5EED, 0xE9A1B2C3D4E5F607, 90000, 10, 12000)
    put("rtcp-rr-sdes-pli", 0, False, 0, rr + sdes + pli)
    put("rtcp-sr-fir", 0, False, 0, sr + fir)
    # An SDP fmtp line as cameras write it.
    fmtp = (
        "96 packetization-mode=1;profile-level-id=42c01e;sprop-parameter-sets="
        + base64.b64encode(sps).decode()
        + ","
        + base64.b64encode(pps).decode().rstrip("=")
    )
    put("fmtp-h264", 0, False, 0, fmtp.encode())
    fmtp5 = f"sprop-vps={base64.b64encode(vps).decode()};sprop-sps={base64.b64encode(sps5).decode()};sprop-max-don-diff=0"
    put("fmtp-h265", 1, False, 0, fmtp5.encode())


# --- roq ---------------------------------------------------------------------------------

def quic_varint(n, length=None):
    length = length or (1 if n < 0x40 else 2 if n < 0x4000 else 4 if n < 0x40000000 else 8)
    prefix = {1: 0, 2: 0x40, 4: 0x80, 8: 0xC0}[length]
    b = n.to_bytes(length, "big")
    return bytes([b[0] | prefix]) + b[1:]


def roq():
    h264 = annex_b(ROOT / "tests/fixtures/h264-baseline.h264")
    p_frame = next(n for n in h264 if n[0] & 0x1F == 1)
    pkts = [rtp_header(i, 3600 * i, i % 3 == 2) + p_frame[: 40 + 30 * i] for i in range(4)]
    pli = bytes([0x81, 206, 0, 2]) + struct.pack(">II", 0x1234, 0x5EED5EED)
    write("roq", "datagram", bytes([WHOLE]) + quic_varint(4) + pkts[0])
    write("roq", "datagram-rtcp-long-varint", bytes([WHOLE]) + quic_varint(4, 8) + pli)
    stream = quic_varint(17) + b"".join(quic_varint(len(p)) + p for p in pkts)
    write("roq", "stream", bytes([SMALL | seed(4)]) + stream)
    write("roq", "stream-bytewise", bytes([BYTES]) + stream[:200])
    write("roq", "stream-small-limit", bytes([LARGE | FLAG | seed(7)]) + quic_varint(0x3FFF) + quic_varint(20, 2) + pkts[0][:20] + quic_varint(len(pli)) + pli)


# --- policy ------------------------------------------------------------------------------

def policy():
    demo = (ROOT / "src/demo.rs").read_text()
    consts = dict(re.findall(r'const (\w+): &str = "([^"]*)";', demo))
    body = re.search(r'pub fn sncf_policy\(\) -> String \{\s*format!\(\s*r#"(.*?)"#', demo, re.S).group(1)
    text = body.replace("{SNCF}", consts["SNCF"]).replace("{CSU}", consts["CSU"])
    write("policy", "sncf", text.encode())
    hours = text.replace('mode = "live"\nonward', 'hours = ["06:00-22:00", "22:00-06:00"]\nmax_streams = 4\nmax_bitrate_kbps = 8000\nmode = "live"\nonward', 1)
    hours = hours.replace('mode = "live"\nbasis', 'mode = "on_request"\nbasis', 1)
    write("policy", "sncf-hours-on-request", hours.encode())
    ids = "\n".join(
        [
            "metz-ville/**",
            "**/entree",
            "metz/*/ptz",
            "metz-ville/quai-1",
            "sncf/metz-ville/quai-1",
            "sncf",
            "csu.metz.example",
            "08:00-20:00",
            "22:00-24:00",
        ]
    )
    write("policy", "ids", ids.encode())


if __name__ == "__main__":
    rtsp_demux()
    control_frame()
    rtp()
    roq()
    policy()
    for d in sorted(CORPUS.iterdir()):
        print(f"{d.relative_to(FUZZ)}: {len(list(d.iterdir()))} inputs")
