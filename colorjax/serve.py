"""A web page to colorize one photo: upload it, see the gray input beside the colour result.

    python -m colorjax.serve --workdir runs/demo [--port 8000]   # then open http://127.0.0.1:8000/

Standard library only (`http.server`); no JavaScript. Listens on localhost unless `--host`
says otherwise. Uploads are held in memory and never written to disk: the page shows small
previews inline, and the full-resolution PNG stays in a bounded in-memory store for its
download link. Uploads over `--max-upload-mb` or `--max-pixels`, and anything that is not a
JPEG/PNG/WebP/BMP/TIFF photo, get the page back with the reason.

A page on another site cannot use it through the user's browser (the Host and Origin headers
are checked), one photo is decoded, colorized and encoded at a time (memory is bounded by one
photo, not by the number of requests), and connections are capped and time out.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import html
import io
import logging
import os
import re
import secrets
import signal
import socket
import threading
import time
from email import policy
from email.parser import BytesParser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np
from absl import app, flags
from PIL import Image

from colorjax import cli, color, host
from colorjax.colorize import (CHECKPOINT_HELP, COLOUR_AT_RENDER_SIZE_HELP, Colorizer, TooManyPixelsError,
                               parse_flags, read_image, save_png)
from colorjax.data.images import BadImageError, with_alpha

PREVIEW_SIZE = 768                 # long side of the inline previews
_DRAIN_FACTOR = 16                 # an oversized body up to 16x the limit is read and dropped
MAX_CONNECTIONS = 64               # open at once; more are answered 503 and closed
UPLOADS_AT_ONCE = 4                # bodies being received at once (each held whole in memory)
TIMEOUT_S = 30                     # a silent connection is closed after this long...
UPLOAD_TIMEOUT_S = 300             # ...and an upload must arrive within this (50 MB at 1.3 Mbit/s)
_MAX_PART_HEADER = 8192            # bytes of headers per form part
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
_CONTROL = str.maketrans({c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7f, 0xa0)]})
_ACCEPT = "image/jpeg,image/png,image/webp,image/bmp,image/tiff"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>colorjax</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; padding: 0 1rem; }}
.pair {{ display: flex; gap: 1rem; flex-wrap: wrap; }}
figure {{ margin: 0; flex: 1 1 400px; }} img {{ max-width: 100%; }}
.error {{ color: #b00020; font-weight: bold; }}
</style></head><body>
<h1>Colorize a photo</h1>
<form method="post" action="/colorize" enctype="multipart/form-data">
<input type="file" name="photo" accept="{accept}" required>
<button type="submit">Colorize</button>
<p><small>JPEG, PNG, WebP, BMP or TIFF; at most {max_mb:g} MB and {max_mp:g} megapixels.</small></p>
</form>
{body}
</body></html>
"""


class Results:
  """Full-resolution PNGs for the download links, oldest dropped beyond `max_bytes`."""

  def __init__(self, max_bytes: int):
    self.max_bytes = max_bytes
    self._items: collections.OrderedDict[str, tuple[str, bytes]] = collections.OrderedDict()
    self._lock = threading.Lock()

  def add(self, filename: str, png: bytes) -> str:
    token = secrets.token_urlsafe(16)
    with self._lock:
      self._items[token] = (filename, png)
      while sum(len(v[1]) for v in self._items.values()) > self.max_bytes and len(self._items) > 1:
        self._items.popitem(last=False)
    return token

  def get(self, token: str) -> tuple[str, bytes] | None:
    with self._lock:
      return self._items.get(token)


def _png(image: np.ndarray, photo: bytes | None = None, name: str | None = None) -> bytes:
  """`image` as PNG bytes, with what it keeps of the uploaded `photo`'s metadata (`save_png`)."""
  buf = io.BytesIO()
  save_png(image, buf, None if photo is None else io.BytesIO(photo), name)
  return buf.getvalue()


def _thumbnail(image: np.ndarray) -> np.ndarray:
  img = Image.fromarray(image)
  img.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE), Image.LANCZOS)
  return np.asarray(img)


def _preview_uri(image: np.ndarray) -> str:
  """A small PNG as a data: URI, so the page needs no second request for its images."""
  return "data:image/png;base64," + base64.b64encode(_png(_thumbnail(image))).decode()


def _gray(rgb: np.ndarray) -> np.ndarray:
  """What the model sees: the L channel as a uint8 gray image [H, W] (sRGB with a = b = 0)."""
  l, _ = color.rgb_uint8_to_model(rgb, np)
  return color.to_uint8(color.model_to_rgb(l, np.zeros(rgb.shape[:2] + (2,), np.float32), np), np)[..., 1]


class ColorizeServer(ThreadingHTTPServer):
  """Holds the model and the limits; one photo is worked on at a time to bound memory."""

  daemon_threads = True

  def __init__(self, address: tuple[str, int], colorizer: Colorizer, max_upload_bytes: int,
               max_pixels: int, store_bytes: int = 512 << 20):
    self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    super().__init__(address, Handler)
    self.colorizer = colorizer
    self.max_upload_bytes = max_upload_bytes
    self.max_pixels = max_pixels
    self.results = Results(store_bytes)
    self.work_lock = threading.Lock()
    self.uploads = threading.BoundedSemaphore(UPLOADS_AT_ONCE)
    self.connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
    self.loopback = address[0] in _LOOPBACK

  def process_request(self, request: socket.socket, client_address: tuple) -> None:
    if not self.connections.acquire(blocking=False):  # thousands of idle sockets would exhaust the files
      with contextlib.suppress(OSError):
        request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 5\r\n\r\n")
      self.shutdown_request(request)
      return
    super().process_request(request, client_address)

  def process_request_thread(self, request: socket.socket, client_address: tuple) -> None:
    """ThreadingMixIn's, with the slot freed before the socket closes: a client that sees the
    close and connects again at once must find it free."""
    try:
      self.finish_request(request, client_address)
    except Exception:
      self.handle_error(request, client_address)
    finally:
      self.connections.release()
      self.shutdown_request(request)

  def colorize(self, data: bytes, filename: str) -> str:
    """Upload bytes -> the HTML of the result (previews and download link)."""
    with self.work_lock:  # decoding and encoding a 50-MP photo take gigabytes too, not only the model
      try:
        return self._colorize(data, filename)
      finally:
        # Each request runs on a thread of its own, and glibc gives each thread a heap that keeps
        # what it freed: 8 uploads of a 29-MP JPEG took the idle server from 0.50 to 1.37 GB, 0.58 trimmed.
        host.release_freed_memory()

  def _colorize(self, data: bytes, filename: str) -> str:
    rgb, alpha = read_image(data, self.max_pixels, name=filename)
    out = self.colorizer(with_alpha(rgb, alpha))
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.splitext(filename)[0]) or "photo"  # safe in a header
    token = self.results.add(f"{stem}_colorized.png", _png(out, data, filename))
    small = _thumbnail(rgb)  # the gray preview is made small first: full size it took gigabytes
    gray = _gray(small) if alpha is None else np.dstack([_gray(small), _thumbnail(alpha)])  # transparent where the input is
    gray_uri, result_uri = _preview_uri(gray), _preview_uri(out)
    h, w = out.shape[:2]
    return (f'<div class="pair">'
            f'<figure><img id="gray" alt="gray input" src="{gray_uri}">'
            f'<figcaption>Gray input</figcaption></figure>'
            f'<figure><img id="result" alt="colorized" src="{result_uri}">'
            f'<figcaption>Colorized</figcaption></figure></div>'
            f'<p><a id="download" href="/download/{token}" download="{stem}_colorized.png">'
            f'Download the colorized photo ({w}&times;{h} PNG)</a></p>')


class Handler(BaseHTTPRequestHandler):
  server: ColorizeServer
  server_version = "colorjax"
  timeout = TIMEOUT_S

  def _send(self, status: HTTPStatus, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
    try:
      self.send_response(status)
      self.send_header("Content-Type", content_type)
      self.send_header("Content-Length", str(len(body)))
      self.send_header("X-Content-Type-Options", "nosniff")
      self.send_header("Content-Security-Policy", "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                       "form-action 'self'; frame-ancestors 'none'")
      self.send_header("Cache-Control", "no-store")
      self.send_header("Referrer-Policy", "same-origin")
      for k, v in (extra or {}).items():
        self.send_header(k, v)
      self.end_headers()
      if self.command != "HEAD":
        self.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):  # the client left: nothing to answer
      self.close_connection = True

  def _foreign(self) -> str:
    """Why the request may come from another site through the user's browser, or "".

    Bound to localhost, a Host that is not a loopback name is a DNS-rebinding page. A form POST
    whose Origin is not this server, or "null" (a page that hides its origin: this one's own
    posts carry it, by its Referrer-Policy same-origin), or that the browser marks as from
    another site, is another site's page: forms need no CORS. curl sends neither header.
    """
    host = self.headers.get("Host", "")
    if self.server.loopback and urlsplit(f"//{host}").hostname not in _LOOPBACK:
      return f"Host {host!r} is not this server (ask for it by 127.0.0.1, localhost or [::1])"
    if self.command != "POST":
      return ""
    origin = self.headers.get("Origin")
    if origin and urlsplit(origin).netloc != host or self.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
      return f"a page of {origin or 'another site'} cannot post here"
    return ""

  def _page(self, status: HTTPStatus, body: str = "", error: str = "") -> None:
    if error:
      body = f'<p class="error" id="error">{html.escape(error)}</p>'
    page = _PAGE.format(accept=_ACCEPT, body=body, max_mb=self.server.max_upload_bytes / 1e6,
                        max_mp=self.server.max_pixels / 1e6)
    self._send(status, page.encode(), "text/html; charset=utf-8")

  def do_GET(self) -> None:
    if why := self._foreign():
      return self._page(HTTPStatus.FORBIDDEN, error=f"Forbidden: {why}.")
    path = urlsplit(self.path).path
    if path in ("/", "/index.html"):
      return self._page(HTTPStatus.OK)
    match = re.fullmatch(r"/download/([\w-]+)", path)
    item = self.server.results.get(match.group(1)) if match else None
    if item is None:
      gone = " (results are kept in memory only for a while; colorize the photo again)" if match else ""
      return self._page(HTTPStatus.NOT_FOUND, error=f"Not found{gone}.")
    filename, png = item
    self._send(HTTPStatus.OK, png, "image/png", {"Content-Disposition": f'attachment; filename="{filename}"'})

  do_HEAD = do_GET

  def do_POST(self) -> None:
    if why := self._foreign():
      self.close_connection = True  # its body is not read
      return self._page(HTTPStatus.FORBIDDEN, error=f"Forbidden: {why}.")
    length = _content_length(self.headers.get("Content-Length") or "")
    limit = self.server.max_upload_bytes
    if urlsplit(self.path).path != "/colorize":
      if length < 0:
        self.close_connection = True  # an unknown body must not be read as the next request
      else:
        self._drain(length)
      return self._page(HTTPStatus.NOT_FOUND, error="Not found.")
    if length < 0:
      return self._page(HTTPStatus.LENGTH_REQUIRED, error="The upload must say its length.")
    if length > limit:
      self._drain(length)
      return self._page(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        error=f"The file is too large: {length / 1e6:.1f} MB, the limit is {limit / 1e6:g} MB.")
    if not self.server.uploads.acquire(timeout=TIMEOUT_S):  # slow uploaders must not queue everyone
      self._drain(length)  # unread, the body would reset the connection before the client saw why
      self.close_connection = True
      return self._page(HTTPStatus.SERVICE_UNAVAILABLE, error="Busy with other uploads: try again in a minute.")
    try:
      data, filename = self._read_upload(length)
      body = self.server.colorize(data, filename)  # the upload's memory is held until its photo is done
    except (TimeoutError, ConnectionError):  # a client that stopped sending or left: no one is waiting for the page
      self.close_connection = True
      return
    except TooManyPixelsError as e:
      return self._page(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, error=str(e))
    except BadImageError as e:
      return self._page(HTTPStatus.BAD_REQUEST, error=str(e))
    except Exception:  # a bug or an exhausted machine: say so on the page, keep serving
      logging.exception("colorizing an upload failed")
      return self._page(HTTPStatus.INTERNAL_SERVER_ERROR, error="Colorizing failed; the server's log says why.")
    finally:
      self.server.uploads.release()
    self._page(HTTPStatus.OK, body=body)

  def _drain(self, length: int) -> None:
    """Reads and drops a body that will not be used (too large, not a form, no slot free), so the
    client sees the answer, not a reset."""
    if length > _DRAIN_FACTOR * self.server.max_upload_bytes:
      self.close_connection = True
      return
    try:
      self._receive(memoryview(bytearray(1 << 20)), length)
    except (TimeoutError, ConnectionError):
      self.close_connection = True

  def _receive(self, into: memoryview, length: int) -> None:
    """Reads `length` bytes of the body into `into` (cycling through it when it is shorter).
    Each read waits at most `timeout`; a trickle of bytes ends at UPLOAD_TIMEOUT_S."""
    deadline, got = time.monotonic() + UPLOAD_TIMEOUT_S, 0
    while got < length:
      start = got % len(into)
      n = self.rfile.readinto1(into[start:start + min(length - got, len(into) - start)])
      got += n
      if not n or got < length and time.monotonic() > deadline:
        raise TimeoutError("the upload did not arrive")

  def _read_upload(self, length: int) -> tuple[bytes, str]:
    """The `photo` field of a multipart form -> (bytes, file name), read into one buffer. The
    caller holds an `uploads` slot: 64 connections x 50 MB would not fit in memory."""
    content_type = self.headers.get("Content-Type", "")
    if not content_type.lower().startswith("multipart/form-data"):
      self._drain(length)
      raise BadImageError("expected a form upload (multipart/form-data)")
    body = bytearray(length)
    self._receive(memoryview(body), length)
    return form_file(body, content_type, "photo")

  def log_message(self, format: str, *args) -> None:
    logging.info("%s %s", self.address_string(), (format % args).translate(_CONTROL))


def _content_length(header: str) -> int:
  """Content-Length as a number, -1 if it is not one; past 10**18 (`int` refuses a string of over
  4300 digits: an answerless ValueError) only as larger than any limit."""
  if not re.fullmatch(r"[0-9]+", header):
    return -1
  digits = header.lstrip("0")
  return int(digits or "0") if len(digits) <= 18 else 10 ** 18


def form_file(body: bytes | bytearray, content_type: str, field: str) -> tuple[bytes, str]:
  """A multipart/form-data body -> (bytes, file name) of `field`.

  Only the top level is split, at CRLF--boundary (RFC 2046), and only each part's few header
  lines go through `email`: the whole body through `email.parser` took 23 s of CPU for a
  crafted 1 MB of nested parts, and 2 GB of memory for 48 MB of empty lines.
  """
  boundary = re.search(r'(?:^|;)\s*boundary\s*=\s*(?:"([^"]{1,200})"|([^;\s]{1,200}))', content_type, re.IGNORECASE)
  if not boundary:
    raise BadImageError("the form upload names no boundary")
  delimiter = b"\r\n--" + (boundary.group(1) or boundary.group(2)).encode("latin-1")

  def next_delimiter(at: int) -> int:
    """The next CRLF--boundary that ends a line (or closes the body) at or after `at`, or -1."""
    while (at := body.find(delimiter, at)) != -1:
      rest = bytes(body[at + len(delimiter):at + len(delimiter) + 80]).lstrip(b" \t")
      if rest.startswith((b"\r\n", b"--")) or not rest:
        return at
      at += 1
    return -1

  at = -2 if body.startswith(delimiter[2:]) else next_delimiter(0)  # the first may open the body
  for _ in range(64):
    if at == -1 or body.startswith(b"--", at + len(delimiter)):  # none, or the closing delimiter
      break
    start = body.find(b"\r\n", at + len(delimiter)) + 2  # past any whitespace after the boundary
    end = next_delimiter(start - 2)
    blank = body.find(b"\r\n\r\n", start - 2, min(end, start + _MAX_PART_HEADER))
    if start < 2 or end < 0 or blank < 0:  # a part never closed, or headers without an end
      raise BadImageError("the form upload is malformed")
    headers = BytesParser(policy=policy.HTTP).parsebytes(bytes(body[start:blank + 4]), headersonly=True)
    if headers.get_param("name", header="content-disposition") == field:
      filename = os.path.basename(headers.get_filename() or "photo")
      if blank + 4 >= end:
        raise BadImageError(f"{filename}: the file is empty")
      return memoryview(body)[blank + 4:end].tobytes(), filename
    at = end
  raise BadImageError("no photo in the upload: choose a file first")


def main(argv: list[str]) -> None:
  del argv
  if not 0 <= FLAGS.port <= 65535:
    raise app.UsageError(f"--port {FLAGS.port} is not a port number (0-65535; 0: any free port)")
  if FLAGS.max_upload_mb <= 0 or FLAGS.max_pixels < 1:  # every upload would be refused
    raise app.UsageError(f"--max-upload-mb and --max-pixels must be positive, got {FLAGS.max_upload_mb:g} "
                         f"and {FLAGS.max_pixels}")
  cli.cache_compilations()
  try:
    colorizer = Colorizer.from_workdir(FLAGS.workdir, FLAGS.checkpoint, FLAGS.render_size or None,
                                       colour_at_render_size=FLAGS.colour_at_render_size)
    server = ColorizeServer((FLAGS.host, FLAGS.port), colorizer, int(FLAGS.max_upload_mb * 1e6), FLAGS.max_pixels)
  except (FileNotFoundError, ValueError) as e:
    cli.exit_with_error(e)
  except OSError as e:  # e.g. the port is taken
    cli.exit_with_error(e, f"cannot listen on {FLAGS.host}:{FLAGS.port} ({e.strerror or e})")
  if FLAGS.host not in _LOOPBACK:
    logging.warning("listening on %s: anyone who can reach this machine can upload photos", FLAGS.host)
  host, port = server.server_address[:2]
  host = f"[{host}]" if ":" in host else host
  print(f"colorjax: serving on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
  signal.signal(signal.SIGTERM, signal.default_int_handler)  # stops as Ctrl-C does
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()


FLAGS = flags.FLAGS

if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "Training workdir with config.json and checkpoints/")
  flags.DEFINE_string("checkpoint", "", CHECKPOINT_HELP)
  flags.DEFINE_integer("render_size", 0, "Short side the model sees (default: the training image_size)")
  flags.DEFINE_boolean("colour_at_render_size", False, COLOUR_AT_RENDER_SIZE_HELP)
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface)")
  flags.DEFINE_integer("port", 8000, "Port to listen on (0: any free port)")
  flags.DEFINE_float("max_upload_mb", 50.0, "Largest upload accepted, in MB")
  flags.DEFINE_integer("max_pixels", 50_000_000, "Largest photo accepted, in pixels")
  flags.mark_flags_as_required(["workdir"])
  logging.getLogger().setLevel(logging.INFO)
  cli.run(main, flags_parser=parse_flags)
