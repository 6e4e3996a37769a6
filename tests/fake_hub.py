"""Test double: a Hugging Face hub stand-in served on 127.0.0.1 (real HTTP, real huggingface_hub client)."""

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    """A Hugging Face hub stand-in on 127.0.0.1: serves files, or answers like the hub for gated repos.

    `files` maps `<repo path>/<file>` (e.g. `meta-llama/X/original/tokenizer.model`,
    `datasets/allenai/c4/en/...`) to bytes; `refuse` maps a repo path to the status it answers.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.refuse: dict[str, int] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _answer(self, body: bool):
                hub.requests.append((self.command, self.path, self.headers.get("Authorization")))
                repo, _, rest = self.path.lstrip("/").partition("/resolve/")
                filename = rest.partition("/")[2]
                if repo in hub.refuse:
                    return self._error(hub.refuse[repo], "GatedRepo", "Access to this model is restricted.")
                data = hub.files.get(f"{repo}/{filename}")
                if data is None:
                    return self._error(404, "EntryNotFound", "Entry not found")
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", hashlib.sha1(repo.encode()).hexdigest())
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _error(self, status: int, code: str, message: str):
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@contextmanager
def serving() -> Iterator[FakeHub]:
    fake = FakeHub()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()
