"""A Plone site on two clients, ours against ZEO 6 (server and client).

    .venv/bin/python -m bench.plone [--runs 3] [--output bench/results/PLONE.md]

Each run builds the same deployment twice with the recipes of this
repository: a server and two Plone clients (``application = zope``,
``eggs = Plone``), each client with its own blob cache, every process
started through the generated ``bin/`` scripts.

``ours``  the ``zodbserver:server`` part; the clients' ``zope.conf`` opens
          the database through ``%import zodbserver`` and our
          ``<clientstorage>``.
``zeo``   ZEO 6's own server (``python -m ZEO.runzeo``) on a zeo.conf of the
          same shape; the clients' ``zope.conf`` (``zope-conf``) opens the
          database through ZODB's ``<zeoclient>``, ZEO's ClientStorage.

The HTTP side (Zope in waitress, four threads) is the same in both, so the
figures differ by the database server and client storage alone.  Timed,
in seconds, from the request's start to its last byte:

``site``        ``POST /@sites``: a classic Plone site created on client1;
``cold page``   ``GET /Plone`` on client2 just restarted (an empty object
                cache), its first request;
``warm page``   the same page again;
``2 MB image``  ``GET .../@@download/image`` on client2 of a 2 MB PNG just
                added through plone.restapi on client1 (the blob travels
                into client2's blob cache).

The report gives each measure's median over ``--runs`` runs (the order of
the stacks alternates) and the ratio ours/ZEO.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parent.parent
BUILDOUT = Path(sys.executable).with_name("buildout")
MANAGER = b"admin:secret"
MEASURES = ("site", "cold page", "warm page", "2 MB image")
SITE = {
    "distribution": "classic",
    "site_id": "Plone",
    "title": "Site",
    "default_language": "en",
    "portal_timezone": "UTC",
    "setup_content": False,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(argv: list[str], cwd: Path, **kwargs: Any) -> None:
    result = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=300, **kwargs
    )
    if result.returncode != 0:
        raise RuntimeError(f"{argv}: {result.stdout}{result.stderr}")


def timed(port: int, method: str, path: str, body: Any = None) -> tuple[float, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method=method
    )
    request.add_header("Authorization", "Basic " + base64.b64encode(MANAGER).decode())
    if data is not None:
        request.add_header("Accept", "application/json")
        request.add_header("Content-Type", "application/json")
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        content = response.read()
    return time.perf_counter() - started, content


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def zeo_zope_conf(home: Path, var: Path, zeo_port: int) -> str:
    return f"""instancehome {home}
clienthome {var}
<zodb_db main>
  mount-point /
  cache-size 30000
  <zeoclient>
    server 127.0.0.1:{zeo_port}
    storage 1
    cache-size 30MB
    blob-dir {var}/blobcache
  </zeoclient>
</zodb_db>
"""


def buildout(directory: Path, stack: str, zeo_port: int, http: dict[str, int]) -> str:
    parts = " ".join(http) if stack == "zeo" else "zeoserver " + " ".join(http)
    config = f"""[buildout]
develop = {CHECKOUT}
parts = {parts}
newest = false
offline = true

[instance]
recipe = zodbserver:instance
application = zope
user = {MANAGER.decode()}
eggs = Plone
zeo-address = {zeo_port}
"""
    if stack == "ours":
        config += (
            f"\n[zeoserver]\nrecipe = zodbserver:server\nzeo-address = {zeo_port}\n"
        )
    for name, port in http.items():
        config += f"\n[{name}]\n<= instance\nhttp-address = {port}\n"
        if stack == "zeo":
            home = directory / "zope" / name
            (home / "var").mkdir(parents=True)
            conf = home / "zope.conf"
            conf.write_text(zeo_zope_conf(home, home / "var", zeo_port))
            config += f"zope-conf = {conf}\n"
    return config


def png_of_about_2mb() -> bytes:
    from PIL import Image

    side = 830
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def one_run(stack: str, png: bytes) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        zeo_port = free_port()
        http = {"client1": free_port(), "client2": free_port()}
        (directory / "buildout.cfg").write_text(
            buildout(directory, stack, zeo_port, http)
        )
        run([str(BUILDOUT), "-c", "buildout.cfg"], directory)
        zeo = None
        if stack == "zeo":
            conf = directory / "zeo.conf"
            conf.write_text(
                f"<zeo>\n  address 127.0.0.1:{zeo_port}\n</zeo>\n"
                f"<filestorage 1>\n  path {directory}/Data.fs\n"
                f"  blob-dir {directory}/blobs\n</filestorage>\n"
            )
            zeo = subprocess.Popen(
                [sys.executable, "-m", "ZEO.runzeo", "-C", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for_port(zeo_port)
        else:
            run([str(directory / "bin" / "zeoserver"), "start"], directory)
        try:
            return measure(directory, http, png)
        finally:
            for client in http:
                subprocess.run(
                    [str(directory / "bin" / client), "stop"],
                    cwd=directory,
                    capture_output=True,
                    timeout=120,
                )
            if zeo is not None:
                zeo.terminate()
                zeo.wait(60)
            else:
                run([str(directory / "bin" / "zeoserver"), "stop"], directory)


def measure(directory: Path, http: dict[str, int], png: bytes) -> dict[str, float]:
    one, two = http["client1"], http["client2"]
    for client in http:
        run([str(directory / "bin" / client), "start"], directory)
    figures: dict[str, float] = {}
    figures["site"], _ = timed(one, "POST", "/@sites", SITE)
    image = {
        "@type": "Image",
        "id": "photo",
        "image": {
            "data": base64.b64encode(png).decode(),
            "encoding": "base64",
            "filename": "photo.png",
            "content-type": "image/png",
        },
    }
    timed(one, "POST", "/Plone", image)
    run([str(directory / "bin" / "client2"), "stop"], directory)
    run([str(directory / "bin" / "client2"), "start"], directory)
    figures["cold page"], _ = timed(two, "GET", "/Plone")
    figures["warm page"], _ = timed(two, "GET", "/Plone")
    figures["2 MB image"], data = timed(two, "GET", "/Plone/photo/@@download/image")
    if data != png:
        raise RuntimeError("client2 served other bytes than client1 stored")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.plone", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    png = png_of_about_2mb()
    results: dict[str, list[dict[str, float]]] = {"ours": [], "zeo": []}
    for number in range(args.runs):
        order = ("ours", "zeo") if number % 2 == 0 else ("zeo", "ours")
        for stack in order:
            figures = one_run(stack, png)
            results[stack].append(figures)
            print(stack, {key: round(value, 3) for key, value in figures.items()})
    lines = [
        "# Plone on two clients: ours against ZEO 6",
        "",
        f"Medians of {args.runs} runs, seconds (`python -m bench.plone`).",
        "",
        "| measure | ours | ZEO 6 | ours/ZEO |",
        "|---|---|---|---|",
    ]
    for key in MEASURES:
        ours = statistics.median(run[key] for run in results["ours"])
        zeo = statistics.median(run[key] for run in results["zeo"])
        lines.append(f"| {key} | {ours:.3f} | {zeo:.3f} | {ours / zeo:.2f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output is not None:
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
