"""Video on a running node: a listed video is found in its re-encodes, a greyscale copy, a clip
and a still; a listed image is found inside a video; dihedral PDQ finds turned and mirrored
copies. Every copy is made here with PyAV from Meta's conformance video.

One member's node (``hashmesh serve``), driven through its local API as an upload pipeline
would drive it; CLI commands run as subprocesses.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from harness import REPO, NodeProc, found_federation
from PIL import Image
from vpdq_conformance import VIDEOS, needs_vpdq_conformance

from node.home import NodeHome

pytestmark = [pytest.mark.slow, needs_vpdq_conformance]

ORIGINAL = VIDEOS / "chair-orig-22-sd-bar.mp4"
UNRELATED = VIDEOS / "doorknob-hd-no-bar.mp4"
BOUNDARY = "hashmeshvideoboundary"
LABEL = "entity:test"


@dataclass
class World:
    node: NodeProc
    files: Path


def frames_of(path: Path, start_s: float = 0.0, end_s: float = 1e9) -> Iterator[Image.Image]:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            t = float(frame.time or 0.0)
            if start_s <= t < end_s:
                yield frame.to_image()


def write_video(path: Path, pictures: Iterator[Image.Image], fps: int = 30,
                bit_rate: int = 400_000) -> Path:  # fmt: skip
    """An MPEG-4 Part 2 encode (another codec than the original's H.264)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.bit_rate = bit_rate
        stream.pix_fmt = "yuv420p"
        for i, picture in enumerate(pictures):
            if i == 0:
                stream.width, stream.height = picture.size
            frame = av.VideoFrame.from_image(picture.convert("RGB"))
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def texture(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(size[1] // 20, size[0] // 20, 3), dtype=np.uint8)
    return Image.fromarray(blocks.repeat(20, axis=0).repeat(20, axis=1))


def png(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def upload(node: NodeProc, path: str, data: bytes, **fields: str) -> tuple[int, dict[str, Any]]:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]  # fmt: skip
    parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
                 f'filename="upload"\r\n\r\n'.encode() + data + b"\r\n")  # fmt: skip
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {NodeHome(node.home).token()}",
               "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}  # fmt: skip
    request = urllib.request.Request(
        f"http://127.0.0.1:{node.local_port}{path}", body, headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("video")
    _federation, (node,) = found_federation(root, ["a"], threshold=1)
    files = root / "files"
    files.mkdir()
    try:
        node.start()
        status, added = upload(node, "/v1/signals", ORIGINAL.read_bytes(), labels=LABEL)
        assert status == 201, added
        assert added["kind"] == "video" and added["frames"] >= 22
        kinds = [s["type"] for s in added["signals"]]
        assert kinds == ["vpdq"] * (len(kinds) - 1) + ["md5"]
        yield World(node, files)
    finally:
        node.stop()


def matched_videos(answer: dict[str, Any]) -> list[dict[str, Any]]:
    (result,) = answer["results"]
    return list(result["videos"])


def test_a_listed_video_matches_its_copies_and_not_an_unrelated_video(world: World) -> None:
    copies = {
        "re-encode": write_video(world.files / "re.mp4", frames_of(ORIGINAL)),
        "greyscale": write_video(
            world.files / "grey.mp4", (f.convert("L") for f in frames_of(ORIGINAL))
        ),
        "20 s clip": write_video(world.files / "clip.mp4", frames_of(ORIGINAL, 1.0, 21.0)),
    }
    for name, path in copies.items():
        status, answer = upload(world.node, "/v1/match", path.read_bytes())
        assert status == 200, (name, answer)
        (video,) = matched_videos(answer)
        assert video["query_matched_pct"] >= 80, (name, video)
        assert video["signals"][0]["labels"] == [LABEL]
        assert video["ranges_ms"], name
        assert answer["matched"] is True
    status, answer = upload(world.node, "/v1/match", UNRELATED.read_bytes())
    assert status == 200 and answer["matched"] is False and matched_videos(answer) == []


def test_a_still_of_a_listed_video_finds_it_with_the_frames_time(world: World) -> None:
    still = next(frames_of(ORIGINAL, 10.0, 10.1))
    status, answer = upload(world.node, "/v1/match", png(still))
    assert status == 200, answer
    (result,) = answer["results"]
    assert result["kind"] == "image" and result["videos"], result
    hit = result["videos"][0]
    assert hit["type"] == "vpdq" and 8_000 <= hit["frame_ms"] <= 12_000, hit
    assert answer["matched"] is True


def test_a_listed_image_is_found_inside_a_video(world: World) -> None:
    listed = texture(11)
    status, added = upload(world.node, "/v1/signals", png(listed), labels=LABEL)
    assert status == 201, added
    pictures = (
        [texture(100 + i) for i in range(30)]
        + [listed] * 30
        + [texture(200 + i) for i in range(30)]
    )
    video = write_video(world.files / "inside.mp4", iter(pictures), fps=10, bit_rate=2_000_000)
    status, answer = upload(world.node, "/v1/match", video.read_bytes())
    assert status == 200, answer
    (result,) = answer["results"]
    pdq_id = next(s["id"] for s in added["signals"] if s["type"] == "pdq")
    (image,) = [i for i in result["images"] if i["id"] == pdq_id]
    assert image["frames_ms"] and all(3_000 <= ms < 6_000 for ms in image["frames_ms"]), image
    assert result["matched"] is True


def test_turned_and_mirrored_copies_match_only_with_dihedral(world: World) -> None:
    listed = texture(21, (320, 320))
    status, _added = upload(world.node, "/v1/signals", png(listed), labels=LABEL)
    assert status == 201
    for transpose in (Image.Transpose.ROTATE_90, Image.Transpose.FLIP_LEFT_RIGHT):
        copy = png(listed.transpose(transpose))
        status, plain = upload(world.node, "/v1/match", copy)
        assert status == 200 and plain["matched"] is False, plain
        status, turned = upload(world.node, "/v1/match", copy, dihedral="true")
        assert status == 200 and turned["matched"] is True, turned
        (result,) = turned["results"]
        hits = [d for d in result["dihedral"] if d["matched"]]
        assert [d["transform"] for d in hits] in (["rotate_90_cw"], ["rotate_90_ccw"],
                                                   ["flip_horizontal"]), hits  # fmt: skip


def test_bad_video_uploads_are_refused_clearly_and_list_nothing(world: World) -> None:
    before = world.node.api("GET", "/v1/signals?limit=1000")["signals"]
    audio = world.files / "audio.m4a"
    with av.open(str(audio), "w") as out:
        stream = out.add_stream("aac", rate=8000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32),
                                               format="fltp", layout="mono")  # fmt: skip
            frame.sample_rate, frame.pts = 8000, i * 1024
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    truncated = ORIGINAL.read_bytes()[:60_000]
    cases = {
        "audio only": (audio.read_bytes(), "audio only"),
        "truncated": (truncated, ""),
        "neither": (b"just some text, not media\n" * 100, "neither an image nor a video"),
    }
    for name, (data, says) in cases.items():
        status, problem = upload(world.node, "/v1/signals", data, labels=LABEL)
        assert 400 <= status < 500 and problem["status"] == status, (name, problem)
        assert says in problem["detail"], (name, problem["detail"])
    after = world.node.api("GET", "/v1/signals?limit=1000")["signals"]
    assert after == before


def test_cli_adds_hashes_and_matches_a_video(world: World) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HASHMESH_HOME"}
    home = str(world.node.home)
    clip = world.files / "clip.mp4"
    if not clip.exists():
        write_video(clip, frames_of(ORIGINAL, 1.0, 21.0))

    def hm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True,
                              text=True, env=env, cwd=REPO, timeout=120, check=False)  # fmt: skip

    hashed = hm("hash", "--json", str(clip))
    assert hashed.returncode == 0, hashed.stderr
    (entry,) = json.loads(hashed.stdout)["files"]
    assert entry["kind"] == "video" and entry["frames"] >= 19 and entry["hashes"]["vpdq"]
    matched = hm("match", "--home", home, "--json", str(clip))
    assert matched.returncode == 0, matched.stderr
    answer = json.loads(matched.stdout)
    (result,) = answer["results"]
    assert answer["matched"] is True and result["videos"][0]["query_matched_pct"] >= 80
    unrelated = hm("match", "--home", home, "--json", str(UNRELATED))
    assert unrelated.returncode == 1, unrelated.stderr
    added = hm("add", "--home", home, "--json", "--label", LABEL, str(UNRELATED))
    assert added.returncode == 0, added.stderr
    kinds = {s["type"] for s in json.loads(added.stdout)["signals"]}
    assert kinds == {"vpdq", "md5"}
    assert hm("match", "--home", home, "--json", str(UNRELATED)).returncode == 0
    listed = texture(31, (320, 320))
    (world.files / "listed.png").write_bytes(png(listed))
    (world.files / "turned.png").write_bytes(png(listed.transpose(Image.Transpose.ROTATE_270)))
    added = hm("add", "--home", home, "--label", LABEL, str(world.files / "listed.png"))
    assert added.returncode == 0, added.stderr
    turned = str(world.files / "turned.png")
    assert hm("match", "--home", home, turned).returncode == 1
    found = hm("match", "--home", home, "--dihedral", "--json", turned)
    assert found.returncode == 0, found.stderr
    hits = [r["query"] for r in json.loads(found.stdout)["results"] if r["matched"]]
    assert len(hits) == 1 and hits[0].startswith(f"{turned} (rotate_90"), hits
