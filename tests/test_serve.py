"""The web page end to end in a real browser (Debian's Chromium driven by Playwright)."""

import base64
import http.client
import io
import logging
import os
import re
import signal
import socket
import struct
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


def test_the_download_keeps_the_photos_exif_and_resolution_but_not_its_rotation(server):
  httpd, base = server
  exif = Image.Exif()
  exif[0x0112], exif[0x010E] = 8, "Rosa and Anton, Vienna 1931"  # rotated on display; ImageDescription
  upload = io.BytesIO()
  Image.open(PHOTO).resize((64, 48)).save(upload, format="JPEG", exif=exif, dpi=(300, 300))
  token = re.search(r'href="/download/([^"]+)"', httpd.colorize(upload.getvalue(), "scan.jpg")).group(1)
  with urllib.request.urlopen(f"{base}/download/{token}") as response, Image.open(io.BytesIO(response.read())) as png:
    assert png.size == (48, 64) and png.info["dpi"] == pytest.approx((300, 300), abs=0.01)
    assert png.getexif()[0x010E] == "Rosa and Anton, Vienna 1931" and 0x0112 not in png.getexif()


def test_exif_that_cannot_be_carried_over_is_said_of_the_upload_by_its_name(server, monkeypatch, caplog):
  httpd, _ = server
  exif = Image.Exif()
  exif[0x010E] = "a tag Pillow will fail to write"
  upload = io.BytesIO()
  Image.open(PHOTO).resize((64, 48)).save(upload, format="JPEG", exif=exif)
  def fails(self, *args):
    raise ValueError("as Pillow's writer does on a malformed value")
  monkeypatch.setattr(Image.Exif, "tobytes", fails)
  with caplog.at_level(logging.INFO):
    assert 'id="download"' in httpd.colorize(upload.getvalue(), "scan.jpg")
  assert "scan.jpg: its EXIF and resolution are not kept (ValueError: as Pillow's writer does on a malformed value)" \
      in caplog.messages


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
  # A body posted to an unknown path is read and dropped, so the client sees the 404, not a reset.
  conn = http.client.HTTPConnection(host, int(port), timeout=30)
  conn.request("POST", "/upload", body=b"x" * 3_000_000)
  assert conn.getresponse().status == 404


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


@pytest.mark.parametrize("flag", ["--max-upload-mb=0", "--max-pixels=-5"])
def test_limits_that_would_refuse_every_upload_are_refused_at_start(flag, tmp_path):
  run = subprocess.run([sys.executable, "-m", "colorjax.serve", "--workdir", str(tmp_path), flag],
                       env=FAST_ENV, capture_output=True, text=True, timeout=120)
  assert run.returncode == 1 and run.stderr.strip().splitlines() == [
      f"error: --max-upload-mb and --max-pixels must be positive, got {'0 and 50000000' if 'mb' in flag else '50 and -5'}"]


def multipart(filename, data, field="photo", boundary="XyZ"):
  body = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
          f'Content-Type: application/octet-stream\r\n\r\n').encode() + data + f"\r\n--{boundary}--\r\n".encode()
  return body, f"multipart/form-data; boundary={boundary}"


def test_form_file_reads_the_top_level_parts_only():
  body, content_type = multipart("cat.jpg", b"\r\n--not-the-boundary\r\n\r\nbytes")
  assert serve.form_file(body, content_type, "photo") == (b"\r\n--not-the-boundary\r\n\r\nbytes", "cat.jpg")
  utf8 = body.replace(b'filename="cat.jpg"', b"filename*=UTF-8''%C3%A9t%C3%A9.jpg")
  assert serve.form_file(utf8, content_type, "photo")[1] == "été.jpg"
  # A preamble, a part without headers before it, a quoted upper-case BOUNDARY=, a boundary's
  # text inside the file (only CRLF--boundary ends a part).
  browserish = (b"preamble\r\n--XyZ\r\n\r\nno headers\r\n" + body.replace(b"bytes", b"bytes--XyZ tail"))
  assert serve.form_file(browserish, 'multipart/form-data; BOUNDARY="XyZ"', "photo") == (
      b"\r\n--not-the-boundary\r\n\r\nbytes--XyZ tail", "cat.jpg")
  # The boundary's text at a line start inside the file is data unless the line is the boundary
  # alone; parameters after the boundary, and spaces around it, are the header's, not its.
  tricky = body.replace(b"bytes", b"bytes\r\n--XyZtra\r\nmore")
  assert serve.form_file(tricky, "multipart/form-data; boundary=XyZ ; charset=UTF-8", "photo")[0] == (
      b"\r\n--not-the-boundary\r\n\r\nbytes\r\n--XyZtra\r\nmore")
  assert serve.form_file(body, "multipart/form-data; xboundary=no; boundary=XyZ", "photo")[1] == "cat.jpg"
  for bad, message in ((multipart("a.jpg", b"x", field="other"), "no photo in the upload"),
                       (multipart("a.jpg", b""), "a.jpg: the file is empty"),
                       ((body, "multipart/form-data"), "names no boundary"),
                       ((b"--XyZ\r\n" + b"X-Pad: y\r\n" * 2000 + b"\r\nx", content_type), "malformed")):
    with pytest.raises(serve.BadImageError, match=message):
      serve.form_file(*bad, "photo")
  # Parts nested 800 deep are one opaque top-level part, not 800 parses (23 s of CPU through email).
  nested = b"".join(f"--b{i}\r\nContent-Type: multipart/mixed; boundary=b{i + 1}\r\n\r\n".encode() for i in range(800))
  with pytest.raises(serve.BadImageError, match="no photo in the upload"):
    serve.form_file(b"--XyZ\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n" + nested + b"\r\n--XyZ--",
                    content_type, "photo")


def raw_request(base, request, read=True):
  host, port = base.split("//")[1].split(":")
  sock = socket.create_connection((host, int(port)), timeout=30)
  sock.sendall(request)
  if not read:
    return sock
  with sock:
    return b"".join(iter(lambda: sock.recv(65536), b""))  # HTTP/1.0: the server closes after its answer


def test_other_sites_pages_cannot_use_it_through_the_browser(server):
  _, base = server
  host = base.split("//")[1]
  assert raw_request(base, b"GET /?from=bookmark HTTP/1.0\r\nHost: " + host.encode() + b"\r\n\r\n").startswith(b"HTTP/1.0 200")
  rebound = raw_request(base, b"GET / HTTP/1.0\r\nHost: attacker.example\r\n\r\n")  # DNS rebinding
  assert rebound.startswith(b"HTTP/1.0 403") and b"is not this server" in rebound
  body, content_type = multipart("cat.jpg", open(PHOTO, "rb").read())
  for headers, status in (({"Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}, 200),
                          ({"Origin": "http://evil.example"}, 403),
                          ({"Origin": "null"}, 403),  # a page that hides where it is (no-referrer, sandbox)
                          ({"Sec-Fetch-Site": "cross-site"}, 403)):
    request = urllib.request.Request(base + "/colorize", data=body, headers={"Content-Type": content_type, **headers})
    try:
      assert urllib.request.urlopen(request, timeout=120).status == status
    except urllib.error.HTTPError as e:
      assert e.code == status and b"cannot post here" in e.read()


def test_idle_and_extra_connections_are_closed(server, monkeypatch, caplog):
  httpd, _ = server
  monkeypatch.setattr(serve, "MAX_CONNECTIONS", 2)
  monkeypatch.setattr(serve.Handler, "timeout", 1)
  small = serve.ColorizeServer(("127.0.0.1", 0), httpd.colorizer, max_upload_bytes=200_000, max_pixels=1_000_000)
  threading.Thread(target=small.serve_forever, daemon=True).start()
  base = f"http://127.0.0.1:{small.server_address[1]}"
  try:
    idle = [raw_request(base, b"GET / HTTP/1.1\r\n", read=False) for _ in range(2)]  # headers never finished
    assert raw_request(base, b"GET / HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 503")
    assert all(s.recv(100) == b"" for s in idle)  # closed after Handler.timeout, not held forever
    assert raw_request(base, b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").startswith(b"HTTP/1.0 200")  # slots free again
    lying = raw_request(base, b"POST /colorize HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                              b"Content-Length: 1000\r\n\r\n--x", read=False)
    assert lying.recv(100) == b""  # a body that never comes: closed, no 500 page
    assert raw_request(base, b"POST /colorize HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: \xb2\r\n\r\n").startswith(b"HTTP/1.0 411")
    with caplog.at_level(logging.INFO):
      raw_request(base, b"GET /\x1b[2J\rFAKE HTTP/1.0\r\n\r\n")
    assert "\x1b" not in caplog.text and "\\x1b[2J\\x0dFAKE" in caplog.text  # no terminal escapes in the log
  finally:
    small.shutdown()
    small.server_close()


@pytest.fixture
def small_server(server, monkeypatch):
  """A second server on the same model, for limits monkeypatched lower: 1 upload at a time, 1 s waits."""
  monkeypatch.setattr(serve, "UPLOADS_AT_ONCE", 1)
  monkeypatch.setattr(serve, "TIMEOUT_S", 1)
  httpd = serve.ColorizeServer(("127.0.0.1", 0), server[0].colorizer, max_upload_bytes=50_000_000, max_pixels=1_000_000)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
  httpd.shutdown()
  httpd.server_close()


def _upload_slot_free(httpd, free=True, seconds=30):
  """Waits until the one upload slot is free (a handler has finished with it) or taken."""
  for _ in range(seconds * 20):
    if httpd.uploads.acquire(blocking=False):
      httpd.uploads.release()
      if free:
        return True
    elif not free:
      return True
    threading.Event().wait(0.05)
  return False


def test_a_client_that_must_wait_or_leaves_or_lies_gets_an_answer_or_is_let_go_quietly(small_server, caplog):
  """Found 2026-12-02: the Busy page was sent over a body left unread, so the client's send hit a
  reset instead; a client resetting mid-upload was logged as a failure with a 500; a
  Content-Length of over 4300 digits got no answer (int() refused it)."""
  httpd, base = small_server
  post = (b"POST /colorize HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
          b"Content-Length: %d\r\n\r\n")
  huge = raw_request(base, post.replace(b"%d", b"0" * 5000 + b"5" * 5000))
  assert huge.startswith(b"HTTP/1.0 413") and b"The file is too large" in huge

  holder = raw_request(base, post % 1000 + b"--x", read=False)  # takes the one upload slot, sends no more
  assert _upload_slot_free(httpd, free=False)
  try:
    _, port = base.rsplit(":", 1)
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
    conn.request("POST", "/colorize", body=b"x" * 20_000_000,  # far more than the socket buffers hold
                 headers={"Content-Type": "multipart/form-data; boundary=x"})
    busy = conn.getresponse()
    assert busy.status == 503 and b"Busy with other uploads" in busy.read()
  finally:
    holder.close()
  assert _upload_slot_free(httpd)

  with caplog.at_level(logging.INFO):
    leaving = raw_request(base, post % 100_000 + b"--x\r\n" + b"y" * 1000, read=False)
    assert _upload_slot_free(httpd, free=False)
    leaving.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends a reset
    leaving.close()
    assert _upload_slot_free(httpd)
  assert "failed" not in caplog.text and " 500 " not in caplog.text, caplog.text
