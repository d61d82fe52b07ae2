"""The web page end to end in a real browser (Debian's Chromium driven by Playwright)."""

import base64
import http.client
import io
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from colorjax import serve
from colorjax.colorize import Colorizer
from test_colorize_cli import FAST_ENV, PHOTOS, make_workdir, xla_optimizations_off

CHROMIUM = "/usr/bin/chromium"
# As the machine notes say: headless, no sandbox as root, and no background connections
# (the machine's closed network refuses them).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PHOTO = os.path.join(PHOTOS, "chelsea.jpg")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return make_workdir(tmp_path_factory.mktemp("workdir"))


@pytest.fixture(scope="module")
def server(workdir):
  with xla_optimizations_off():
    colorizer = Colorizer.from_workdir(workdir)
    httpd = serve.ColorizeServer(("127.0.0.1", 0), colorizer, max_upload_bytes=200_000, max_pixels=1_000_000)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def page(server):
  if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium (needs root)")
  sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the `test` extra")
  with sync_api.sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
    yield browser.new_page()
    browser.close()


def upload(page, base, path):
  """Opens the page, picks `path` in the form and submits it; returns the HTTP status."""
  page.goto(base + "/")
  page.set_input_files("input[name=photo]", path)
  with page.expect_navigation() as nav:
    page.click("button[type=submit]")
  return nav.value.status


def data_uri_image(page, selector):
  src = page.get_attribute(selector, "src")
  assert src.startswith("data:image/png;base64,")
  return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))


def test_upload_shows_gray_and_colorized_side_by_side_and_downloads_full_size(server, page, tmp_path):
  httpd, base = server
  assert upload(page, base, PHOTO) == 200
  photo = np.asarray(Image.open(PHOTO))
  gray, result = data_uri_image(page, "#gray"), data_uri_image(page, "#result")
  assert gray.shape == photo.shape[:2] and result.shape == photo.shape  # 451x300: under the preview size
  expected = httpd.colorizer(photo)
  np.testing.assert_array_equal(result, expected)
  with page.expect_download() as download:
    page.click("#download")
  assert download.value.suggested_filename == "chelsea_colorized.png"
  full = np.asarray(Image.open(download.value.path()))
  np.testing.assert_array_equal(full, expected)


@pytest.mark.parametrize("kind, status, message", [
    ("oversized", 413, "The file is too large: 0.3 MB, the limit is 0.2 MB."),
    ("not_an_image", 400, "notes.txt: not a JPEG, PNG, WebP, BMP or TIFF image"),
    ("too_many_pixels", 413, "too many pixels, 2000x1000 = 2,000,000 is over the limit of 1,000,000"),
])
def test_bad_uploads_get_the_page_back_with_the_reason(server, page, tmp_path, kind, status, message):
  _, base = server
  path = {"oversized": tmp_path / "big.jpg", "not_an_image": tmp_path / "notes.txt",
          "too_many_pixels": tmp_path / "wide.png"}[kind]
  if kind == "oversized":
    path.write_bytes(np.random.default_rng(0).bytes(300_000))
  elif kind == "not_an_image":
    path.write_text("not a photo")
  else:
    Image.new("L", (2000, 1000)).save(path)
  assert upload(page, base, str(path)) == status
  assert message in page.inner_text("#error")
  assert page.locator("#result").count() == 0
  page.set_input_files("input[name=photo]", PHOTO)  # the form is back, ready for the next photo


def test_unknown_paths_are_404_and_other_posts_400(server):
  _, base = server
  for path in ("/download/nope", "/etc/passwd", "/../colorjax"):
    with pytest.raises(urllib.error.HTTPError) as e:
      urllib.request.urlopen(base + path)
    assert e.value.code == 404
  request = urllib.request.Request(base + "/colorize", data=b"x" * 10, headers={"Content-Type": "text/plain"})
  with pytest.raises(urllib.error.HTTPError) as e:
    urllib.request.urlopen(request)
  assert e.value.code == 400 and b"multipart/form-data" in e.value.read()
  host, port = base.split("//")[1].split(":")
  conn = http.client.HTTPConnection(host, int(port), timeout=30)
  conn.putrequest("POST", "/colorize")
  conn.putheader("Content-Length", "lots")
  conn.endheaders()
  assert conn.getresponse().status == 411


def test_command_listens_on_localhost_by_default(workdir):
  proc = subprocess.Popen([sys.executable, "-m", "colorjax.serve", "--workdir", workdir, "--port", "0"],
                          env=FAST_ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  try:
    line = proc.stdout.readline()
    assert line.startswith("colorjax: serving on http://127.0.0.1:"), line
    url = line.split()[3]
    assert b'name="photo"' in urllib.request.urlopen(url, timeout=30).read()
  finally:
    proc.send_signal(signal.SIGINT)
  assert proc.wait(timeout=30) == 0
