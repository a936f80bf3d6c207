"""A real Plone 6 on the server, deployed as a Plone operator deploys it.

One buildout extends the classic profile (``profiles/zeo-instance.cfg``)
with ``application = zope``, ``user`` and ``eggs = Plone``: a server part
and two Plone clients, each with its own blob cache.  Through the
generated ``bin/`` scripts the server and both clients start; a classic
site is created through ``@sites``; a Document and a 2 MB Image are made
through plone.restapi on client1 and read byte for byte on client2; an
edit on client2 is read on client1; each client's access log holds its
requests; then everything stops and nothing of the deployment runs.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from recipes.conftest import PROFILE, Pids, buildout_header, free_port, run_buildout
from recipes.test_buildout_deployment import processes_mentioning
from support.waiting import read_until

MANAGER = b"admin:secret"
CLIENTS = ("client1", "client2")


def bin_command(directory: Path, script: str, command: str) -> None:
    result = subprocess.run(
        [str(directory / "bin" / script), command],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"{script} {command}: {result.stdout}{result.stderr}"


def call(
    port: int, method: str, path: str, body: Any = None, *, accept_json: bool = True
) -> tuple[int, bytes]:
    """One request as the manager; the status and the body."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method=method
    )
    request.add_header("Authorization", "Basic " + base64.b64encode(MANAGER).decode())
    if accept_json:
        request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def png_of_about_2mb() -> bytes:
    """A real PNG of random pixels (so it does not compress), about 2 MB."""
    side = 830
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def plone_buildout(directory: Path, zeo_port: int, http: dict[str, int]) -> str:
    config = buildout_header(" ".join(CLIENTS), extends=str(PROFILE))
    config += f"""
[zeoserver]
zeo-address = {zeo_port}

[instance]
application = zope
user = {MANAGER.decode()}
eggs = Plone
environment-vars = TZ UTC
"""
    for name, port in http.items():
        config += f"\n[{name}]\n<= instance\nhttp-address = {port}\n"
    return config


def test_plone_site_document_and_image_across_two_clients(
    tmp_path: Path, pids: Pids
) -> None:
    zeo_port = free_port()
    http = {name: free_port() for name in CLIENTS}
    built = run_buildout(tmp_path, plone_buildout(tmp_path, zeo_port, http))
    assert built.returncode == 0, built.stdout + built.stderr
    var = tmp_path / "var"
    for name in ("zeoserver", *CLIENTS):
        pids.watch(var / f"{name}.pid")
    one, two = http["client1"], http["client2"]
    try:
        bin_command(tmp_path, "zeoserver", "start")
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda name: bin_command(tmp_path, name, "start"), CLIENTS))

        status, body = call(one, "GET", "/@sites")
        assert status == 200, body
        names = [item["name"] for item in json.loads(body)["distributions"]]
        assert "classic" in names
        site = {
            "distribution": "classic",
            "site_id": "Plone",
            "title": "Made through @sites",
            "default_language": "en",
            "portal_timezone": "UTC",
            "setup_content": False,
        }
        status, body = call(one, "POST", "/@sites", site)
        assert status == 200, body
        assert json.loads(body)["@type"] == "Plone Site"

        document = {
            "@type": "Document",
            "id": "doc",
            "title": "Made on client1",
            "text": {"data": "<p>Shared text</p>", "content-type": "text/html"},
        }
        status, body = call(one, "POST", "/Plone", document)
        assert status == 201, body
        png = png_of_about_2mb()
        assert 1_900_000 < len(png) < 2_300_000
        image = {
            "@type": "Image",
            "id": "photo",
            "title": "Photo",
            "image": {
                "data": base64.b64encode(png).decode(),
                "encoding": "base64",
                "filename": "photo.png",
                "content-type": "image/png",
            },
        }
        status, body = call(one, "POST", "/Plone", image)
        assert status == 201, body

        # On client2: the commit reaches it through an invalidation.
        seen = read_until(
            lambda: call(two, "GET", "/Plone/doc"),
            lambda answer: answer[0] == 200,
            timeout=30,
            interval=0.2,
        )
        assert seen[0] == 200, seen
        shown = json.loads(seen[1])
        assert shown["title"] == "Made on client1"
        assert shown["text"]["data"] == "<p>Shared text</p>"
        status, downloaded = call(
            two, "GET", "/Plone/photo/@@download/image", accept_json=False
        )
        assert status == 200
        assert downloaded == png
        assert list((var / "blobcache-client2").rglob("*.blob"))

        status, body = call(two, "PATCH", "/Plone/doc", {"title": "Edited on client2"})
        assert status == 204, body
        edited = read_until(
            lambda: json.loads(call(one, "GET", "/Plone/doc")[1])["title"],
            lambda title: title == "Edited on client2",
            timeout=30,
            interval=0.2,
        )
        assert edited == "Edited on client2"

        for name in CLIENTS:
            bin_command(tmp_path, name, "stop")
        bin_command(tmp_path, "zeoserver", "stop")
        assert pids.alive() == []
        assert processes_mentioning(str(tmp_path)) == []
    finally:
        pids.kill_all()

    log_one = (var / "log" / "client1-access.log").read_text()
    log_two = (var / "log" / "client2-access.log").read_text()
    assert '"POST /@sites HTTP/1.1" 200 ' in log_one
    assert '"POST /Plone HTTP/1.1" 201 ' in log_one
    assert f'"GET /Plone/photo/@@download/image HTTP/1.1" 200 {len(png)} ' in log_two
    assert '"PATCH /Plone/doc HTTP/1.1" 204 ' in log_two
    assert "127.0.0.1 - admin [" in log_two
