"""A minimal loopback Hugging Face Hub for tests, driven by the unmodified huggingface_hub / transformers / datasets
clients through ``HF_ENDPOINT`` (see ``client_env``).

What it implements (stdlib ``http.server`` + PyYAML, HTTP/1.1 with an explicit ``Content-Length`` on every response):

* ``GET /api/whoami-v2``, ``POST /api/validate-yaml`` (parses the README front matter);
* ``POST /api/repos/create`` (409 when the repo exists), ``DELETE /api/repos/delete``,
  ``PUT /api/{type}s/{repo}/settings`` (``private`` / ``visibility``);
* ``GET /api/{type}s/{repo}[/revision/{rev}]``: ``id``, ``sha``, ``siblings``, ``cardData`` (README front matter),
  ``private``, ``tags``, ``pipeline_tag``, ``library_name``, dates;
* ``POST /api/{type}s/{repo}/preupload/{rev}`` (``lfs`` for binary extensions and files over 10 MB),
  ``POST /{prefix}{repo}.git/info/lfs/objects/batch`` (basic transfer only) and the ``PUT`` of the returned upload
  URL (``Content-Length`` or chunked body, checked against the sha256 oid);
* ``POST /api/{type}s/{repo}/commit/{branch}`` (ndjson ``header`` / ``file`` / ``lfsFile`` / ``deletedFile`` /
  ``deletedFolder``, optional ``parentCommit`` checked with 412);
* ``POST`` / ``DELETE /api/{type}s/{repo}/branch/{branch}``, ``GET /api/{type}s/{repo}/refs``;
* ``GET /api/{type}s/{repo}/tree/{rev}[/{path}]`` (``recursive``, ``expand``), ``POST .../paths-info/{rev}`` (JSON or
  form-encoded body);
* ``HEAD`` / ``GET /{prefix}{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, a quoted ``ETag`` (git blob sha1, or
  the sha256 of LFS files) and single ``Range`` requests (206).

Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) and ``X-Error-Message``
headers and a ``{"error": ...}`` JSON body, which is how huggingface_hub maps them to its exception classes.

What it does not implement: authentication (any token, or none, is accepted; private repos are readable by all),
Xet storage (never offered: set ``HF_HUB_DISABLE_XET=1``), multipart LFS, pull requests (``create_pr``), tags, commit
listing, search (``list_models``), canonical repos without a namespace, gated repos, Spaces runtimes.

Storage, under ``root``: ``{models,datasets,spaces}/{namespace}/{name}/`` with ``meta.json`` (private flag, creation
date), ``refs.json`` (branch -> commit id), ``commits/{id}.json`` (parent, message, date and a manifest of every file:
size, git blob oid, sha256, lfs flag) and ``snapshots/{id}/`` (a full copy of the tree, hard links where possible);
LFS objects live in ``lfs/{sha256}``. A commit copies the parent snapshot and applies its operations. Commit ids are
random 40-hex strings, accepted wherever a revision is expected.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml


logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
USER = "emulator-user"
REPO_TYPES = ("model", "dataset", "space")
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_EXTENSIONS = frozenset(
    ".safetensors .bin .parquet .arrow .tar .tgz .zip .gz .bz2 .xz .zst .7z .pt .pth .ckpt .pkl .pickle .joblib .npy"
    " .npz .onnx .h5 .msgpack .tflite .model .ot .jpg .jpeg .png .webp .gif .wav .mp3 .flac .mp4".split()
)
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in sorted(LFS_EXTENSIONS))

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_COMMIT_ID = re.compile(r"[0-9a-f]{40}")
_YAML_BLOCK = re.compile(r"^(\s*---[\r\n]+)([\S\s]*?)([\r\n]+---(\r\n|\n|$))")


class HubError(Exception):
    """An HTTP error answer: status, message and (for huggingface_hub's error mapping) an ``X-Error-Code``."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers, self.body = headers or {}, body or {}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Hard-link (files are never modified in place, only replaced), or copy where links are not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _check_path(path: str) -> str:
    """A file path inside a repository: relative, no empty / ``.`` / ``..`` segments, nothing under ``.git``."""
    parts = path.strip("/").split("/")
    if not path.strip("/") or any(part in ("", ".", "..", ".git") for part in parts):
        raise HubError(400, f"Invalid path in repository: {path!r}")
    return "/".join(parts)


def _parents(path: str) -> Iterator[str]:
    """``"a/b/c"`` -> ``"a"``, ``"a/b"``."""
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def front_matter(readme: str) -> dict | None:
    """The YAML front matter of a README (a model / dataset card) as a dict, or None when it has none."""
    match = _YAML_BLOCK.search(readme)
    if match is None:
        return None
    data = yaml.safe_load(match.group(2))
    return data if isinstance(data, dict) else None


class _Repo:
    """One repository on disk; see the module docstring for the layout. Commits and snapshots are immutable."""

    def __init__(self, root: Path, repo_type: str, repo_id: str):
        namespace, _, name = repo_id.partition("/")
        if not (_NAME.fullmatch(namespace) and _NAME.fullmatch(name)) or ".." in repo_id or name.endswith(".git"):
            raise HubError(400, f"Invalid repo id {repo_id!r}: expected 'namespace/name'.")
        self.type, self.id, self.namespace = repo_type, repo_id, namespace
        self.dir = root / f"{repo_type}s" / namespace / name

    @property
    def exists(self) -> bool:
        return (self.dir / "meta.json").is_file()

    def meta(self) -> dict:
        return json.loads((self.dir / "meta.json").read_text())

    def refs(self) -> dict[str, str]:
        return json.loads((self.dir / "refs.json").read_text())

    def commit(self, commit_id: str) -> dict:
        return json.loads((self.dir / "commits" / f"{commit_id}.json").read_text())

    def snapshot(self, commit_id: str) -> Path:
        return self.dir / "snapshots" / commit_id

    def resolve(self, revision: str) -> str:
        """A branch name or a commit id -> the commit id, or 404 ``RevisionNotFound``."""
        refs = self.refs()
        if revision in refs:
            return refs[revision]
        if _COMMIT_ID.fullmatch(revision) and (self.dir / "commits" / f"{revision}.json").is_file():
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def web_url(self, endpoint: str) -> str:
        return f"{endpoint}/{URL_PREFIXES[self.type]}{self.id}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not block shutdown
    block_on_close = False
    request_queue_size = 64  # the clients upload with several threads
    emulator: HubEmulator


class HubEmulator:
    """A loopback Hub server (see the module docstring). Use as a context manager, or ``start()`` / ``stop()``.

    Attributes:
        fail_commits: when set to a message, every ``/commit/`` request answers HTTP 500 with that message (in the
            ``{"error": ...}`` body and the ``X-Error-Message`` header).
    """

    def __init__(self, root: str | Path, host: str = LOOPBACK, port: int = 0):
        if host != LOOPBACK:
            raise ValueError(f"HubEmulator only binds the loopback address {LOOPBACK}, got host={host!r}.")
        self.root = Path(root)
        (self.root / "lfs").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        self.fail_commits: str | None = None
        self._lock = threading.RLock()  # guards repository creation, refs and commits
        self._requests: list[tuple[str, str, str | None]] = []
        self._requests_lock = threading.Lock()
        self._server = _Server((LOOPBACK, port), _Handler)
        self._server.emulator = self
        self._thread: threading.Thread | None = None

    # ----- lifecycle -------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def start(self) -> HubEmulator:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="hub-emulator", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> HubEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----- inspection helpers for tests ------------------------------------------------------------------------------

    @property
    def requests(self) -> list[tuple[str, str, str | None]]:
        """``(method, path, Authorization header or None)`` of every request received so far (a copy)."""
        with self._requests_lock:
            return list(self._requests)

    def _log_request(self, method: str, path: str, authorization: str | None) -> None:
        with self._requests_lock:
            self._requests.append((method, path, authorization))

    def repo(self, repo_id: str, repo_type: str = "model") -> _Repo:
        """An existing repository, or 404 ``RepoNotFound``."""
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type {repo_type!r}.")
        repo = _Repo(self.root, repo_type, repo_id)
        if not repo.exists:
            raise HubError(404, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def repo_private(self, repo_id: str, repo_type: str = "model") -> bool:
        return bool(self.repo(repo_id, repo_type).meta()["private"])

    def list_files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[str]:
        repo = self.repo(repo_id, repo_type)
        return sorted(repo.commit(repo.resolve(revision))["files"])

    def branches(self, repo_id: str, repo_type: str = "model") -> dict[str, str]:
        return self.repo(repo_id, repo_type).refs()

    # ----- storage operations ----------------------------------------------------------------------------------------

    def create_repo(self, repo_id: str, repo_type: str, private: bool) -> _Repo:
        """Create a repository with an initial commit holding ``.gitattributes`` (409 if it exists)."""
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type {repo_type!r}.")
        repo = _Repo(self.root, repo_type, repo_id)
        with self._lock:
            if repo.exists:
                # create_repo(exist_ok=True) reads the url of the existing repository from the 409 answer
                message = f"You already created this {repo_type} repo: {repo_id}"
                raise HubError(409, message, body={"url": repo.web_url(self.url)})
            shutil.rmtree(repo.dir, ignore_errors=True)  # leftovers of a deleted repository
            (repo.dir / "commits").mkdir(parents=True)
            commit_id = secrets.token_hex(20)
            snapshot = repo.snapshot(commit_id)
            snapshot.mkdir(parents=True)
            content = GITATTRIBUTES.encode()
            (snapshot / ".gitattributes").write_bytes(content)
            files = {".gitattributes": self._entry(content, lfs=False)}
            record = self._commit_record(commit_id, None, "initial commit", "", files)
            _write_json(repo.dir / "commits" / f"{commit_id}.json", record)
            _write_json(repo.dir / "refs.json", {"main": commit_id})
            _write_json(repo.dir / "meta.json", {"private": private, "createdAt": _now()})
        return repo

    def delete_repo(self, repo_id: str, repo_type: str) -> None:
        repo = self.repo(repo_id, repo_type)
        with self._lock:
            (repo.dir / "meta.json").unlink()
            shutil.rmtree(repo.dir, ignore_errors=True)

    def create_branch(self, repo: _Repo, branch: str, starting_point: str | None) -> None:
        if not branch or branch.startswith(("refs/", "/")) or ".." in branch or _COMMIT_ID.fullmatch(branch):
            raise HubError(400, f"Invalid branch name {branch!r}.")
        with self._lock:
            refs = repo.refs()
            if branch in refs:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            refs[branch] = repo.resolve(starting_point or "main")
            _write_json(repo.dir / "refs.json", refs)

    def delete_branch(self, repo: _Repo, branch: str) -> None:
        with self._lock:
            refs = repo.refs()
            if branch not in refs:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if branch == "main":
                raise HubError(403, "Cannot delete the default branch.")
            del refs[branch]
            _write_json(repo.dir / "refs.json", refs)

    def lfs_object(self, oid: str) -> Path:
        return self.root / "lfs" / oid

    def commit(self, repo: _Repo, branch: str, header: dict, operations: list[tuple[str, dict]]) -> str:
        """Copy the branch head's snapshot, apply `operations` (``(key, value)`` of the ndjson lines), advance the
        branch; returns the new commit id."""
        with self._lock:
            refs = repo.refs()
            if branch not in refs:
                repo.resolve(branch)  # 404 RevisionNotFound for an unknown revision
                raise HubError(400, f"Can only commit to a branch, not to {branch!r}.")
            parent = refs[branch]
            expected_parent = header.get("parentCommit")
            if expected_parent and expected_parent != parent:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(repo.commit(parent)["files"])
            commit_id = secrets.token_hex(20)
            work = repo.dir / "snapshots" / f".tmp-{commit_id}"
            shutil.copytree(repo.snapshot(parent), work, copy_function=_link_or_copy)
            try:
                for key, value in operations:
                    self._apply(work, files, key, value)
                os.replace(work, repo.snapshot(commit_id))
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
            title, message = header.get("summary") or "", header.get("description") or ""
            record = self._commit_record(commit_id, parent, title, message, files)
            _write_json(repo.dir / "commits" / f"{commit_id}.json", record)
            refs[branch] = commit_id
            _write_json(repo.dir / "refs.json", refs)
        return commit_id

    @staticmethod
    def _commit_record(commit_id: str, parent: str | None, title: str, message: str, files: dict) -> dict:
        return {"id": commit_id, "parent": parent, "title": title, "message": message, "date": _now(), "files": files}

    @staticmethod
    def _entry(content: bytes, lfs: bool) -> dict:
        """Manifest entry of a file: size, git blob oid (of the LFS pointer for LFS files), sha256, lfs flag."""
        sha256 = hashlib.sha256(content).hexdigest()
        blob = _lfs_pointer(sha256, len(content)) if lfs else content
        return {"size": len(content), "oid": _git_blob_sha1(blob), "sha256": sha256, "lfs": lfs}

    def _apply(self, work: Path, files: dict[str, dict], key: str, value: dict) -> None:
        if key in ("file", "lfsFile"):
            path = _check_path(value.get("path", ""))
            directories = {parent for name in files for parent in _parents(name)}
            if path in directories or any(parent in files for parent in _parents(path)):
                raise HubError(400, f"{path!r} conflicts with an existing file or directory.")
            target = work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)  # may be a hard link shared with the parent snapshot
            if key == "file":
                content = value.get("content", "")
                data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                target.write_bytes(data)
                files[path] = self._entry(data, lfs=False)
            else:
                oid, obj = value.get("oid", ""), self.lfs_object(value.get("oid", ""))
                if not re.fullmatch(r"[0-9a-f]{64}", oid) or not obj.is_file():
                    raise HubError(400, f"LFS object {oid} of {path!r} was never uploaded.")
                size = obj.stat().st_size
                if value.get("size") not in (None, size):
                    raise HubError(400, f"LFS object {oid} has size {size}, not {value['size']}.")
                _link_or_copy(obj, target)
                pointer_oid = _git_blob_sha1(_lfs_pointer(oid, size))
                files[path] = {"size": size, "oid": pointer_oid, "sha256": oid, "lfs": True}
        elif key == "deletedFile":
            path = _check_path(value.get("path", ""))
            if path not in files:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            (work / path).unlink()
            del files[path]
            self._prune_empty_dirs(work, path)
        elif key == "deletedFolder":
            path = _check_path(value.get("path", ""))
            doomed = [name for name in files if name.startswith(path + "/")]
            if not doomed:
                raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            shutil.rmtree(work / path)
            for name in doomed:
                del files[name]
            self._prune_empty_dirs(work, path)
        else:
            raise HubError(400, f"Unsupported commit operation {key!r}.")

    @staticmethod
    def _prune_empty_dirs(work: Path, path: str) -> None:
        for parent in reversed(list(_parents(path))):
            with contextlib.suppress(OSError):  # not empty
                (work / parent).rmdir()


def _tree_oid(files: dict[str, dict], directory: str) -> str:
    """A stand-in for git's tree id: a hash of the entries below `directory` (stable for the same content)."""
    below = sorted(name for name in files if name.startswith(directory + "/"))
    listing = "".join(f"{name}\0{files[name]['oid']}\n" for name in below)
    return hashlib.sha1(listing.encode()).hexdigest()


def _directories(files: dict[str, dict]) -> set[str]:
    return {parent for name in files for parent in _parents(name)}


_TYPE = r"(?P<type>models|datasets|spaces)"  # in /api/ paths
_PREFIX = r"(?:(?P<prefix>datasets|spaces)/)?"  # in file and git paths; models have none
_REPO = r"(?P<namespace>[^/]+)/(?P<name>[^/]+)"
_GIT_REPO = r"(?P<namespace>[^/]+)/(?P<name>[^/]+?)\.git"
# (methods, path regex, handler): `_Handler.handle_<handler>` gets the named groups, percent-decoded, as arguments.
ROUTES: list[tuple[tuple[str, ...], re.Pattern, str]] = [
    (("GET",), re.compile(r"/api/whoami-v2"), "whoami"),
    (("POST",), re.compile(r"/api/validate-yaml"), "validate_yaml"),
    (("POST",), re.compile(r"/api/repos/create"), "create_repo"),
    (("DELETE", "POST"), re.compile(r"/api/repos/delete"), "delete_repo"),
    (("PUT",), re.compile(rf"/api/{_TYPE}/{_REPO}/settings"), "update_settings"),
    (("GET",), re.compile(rf"/api/{_TYPE}/{_REPO}(?:/revision/(?P<revision>[^/]+))?"), "repo_info"),
    (("POST",), re.compile(rf"/api/{_TYPE}/{_REPO}/preupload/(?P<revision>[^/]+)"), "preupload"),
    (("POST",), re.compile(rf"/api/{_TYPE}/{_REPO}/commit/(?P<revision>[^/]+)"), "commit"),
    (("POST",), re.compile(rf"/api/{_TYPE}/{_REPO}/branch/(?P<branch>[^/]+)"), "create_branch"),
    (("DELETE",), re.compile(rf"/api/{_TYPE}/{_REPO}/branch/(?P<branch>[^/]+)"), "delete_branch"),
    (("GET",), re.compile(rf"/api/{_TYPE}/{_REPO}/refs"), "refs"),
    (("GET",), re.compile(rf"/api/{_TYPE}/{_REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?"), "tree"),
    (("POST",), re.compile(rf"/api/{_TYPE}/{_REPO}/paths-info/(?P<revision>[^/]+)"), "paths_info"),
    (("POST",), re.compile(rf"/{_PREFIX}{_GIT_REPO}/info/lfs/objects/batch"), "lfs_batch"),
    (("PUT",), re.compile(r"/lfs-upload/(?P<oid>[0-9a-f]{64})"), "lfs_upload"),
    (("GET", "HEAD"), re.compile(rf"/{_PREFIX}{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)"), "resolve"),
]


class _Handler(BaseHTTPRequestHandler):
    """One HTTP request, dispatched through ``ROUTES`` to a ``handle_*`` method."""

    protocol_version = "HTTP/1.1"
    server_version = "HubEmulator/1.0"

    # ----- plumbing --------------------------------------------------------------------------------------------------

    @property
    def emulator(self) -> HubEmulator:
        return self.server.emulator  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        self._body_state = "unread" if chunked or int(self.headers.get("Content-Length") or 0) > 0 else "read"
        self._responded = False
        self.emulator._log_request(self.command, self.path, self.headers.get("Authorization"))
        try:
            for methods, pattern, name in ROUTES:
                match = pattern.fullmatch(url.path)
                if match is not None and self.command in methods:
                    params = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                    getattr(self, f"handle_{name}")(**params)
                    break
            else:
                raise HubError(404, f"The emulator has no route for {self.command} {url.path}")
        except HubError as error:
            self._send_error(error)
        except Exception as error:  # a bug in the emulator: answer 500 and show it in the test output
            traceback.print_exc()
            self._send_error(HubError(500, f"Hub emulator error: {error!r}"))
        finally:
            self._finish_body()

    def _finish_body(self) -> None:
        """Consume a body the handler did not read, so that the keep-alive connection stays usable."""
        if self._body_state == "unread":
            with contextlib.suppress(Exception):
                for _ in self._body_chunks():
                    pass
        if self._body_state != "read":  # failed in the middle of the body: its end is still on the wire
            self.close_connection = True

    def _body_chunks(self) -> Iterator[bytes]:
        """The request body, from ``Content-Length`` or chunked transfer encoding."""
        self._body_state = "reading"
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                yield from self._read_exactly(size)
                self.rfile.readline(65537)  # CRLF after the chunk
        else:
            yield from self._read_exactly(int(self.headers.get("Content-Length") or 0))
        self._body_state = "read"

    def _read_exactly(self, size: int) -> Iterator[bytes]:
        while size > 0:
            chunk = self.rfile.read(min(size, 1 << 20))
            if not chunk:
                raise HubError(400, "Truncated request body.")
            size -= len(chunk)
            yield chunk

    def _body(self) -> bytes:
        return b"".join(self._body_chunks())

    def _json_body(self) -> Any:
        body = self._body()
        try:
            return json.loads(body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"Invalid JSON body: {error}") from None

    def _flag(self, name: str) -> bool:
        return self.query.get(name, ["false"])[-1].lower() in ("1", "true", "yes")

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self._responded = True
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None,
              content_type: str = "application/json; charset=utf-8") -> None:
        self._send(status, json.dumps(obj).encode(), content_type, headers)

    def _send_error(self, error: HubError) -> None:
        if self._responded:  # too late for an error answer: drop the connection
            self.close_connection = True
            return
        headers = dict(error.headers)
        headers["X-Error-Message"] = " ".join(error.message.split()).encode("ascii", "replace").decode()
        if error.code is not None:
            headers["X-Error-Code"] = error.code
        self._json({**error.body, "error": error.message}, error.status, headers)

    def _repo(self, namespace: str, name: str, type: str | None = None, prefix: str | None = None) -> _Repo:
        """The repository of a matched route: `type` ("models", ...) for /api routes, `prefix` for file routes."""
        repo_type = type[:-1] if type else (prefix[:-1] if prefix else "model")
        return self.emulator.repo(f"{namespace}/{name}", repo_type)

    # ----- account, validation, repositories -------------------------------------------------------------------------

    def handle_whoami(self) -> None:
        self._json({
            "type": "user", "id": "0" * 24, "name": USER, "fullname": "Hub Emulator", "email": None,
            "emailVerified": False, "isPro": False, "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "emulator", "role": "write"}},
        })

    def handle_validate_yaml(self) -> None:
        content = self._json_body().get("content", "")
        try:
            front_matter(content)
        except yaml.YAMLError as error:
            message = f"Invalid YAML front matter: {error}"
            self._json({"error": message, "errors": [{"message": message}], "warnings": []}, 400)
            return
        self._json({"errors": [], "warnings": []})

    def handle_create_repo(self) -> None:
        payload = self._json_body()
        name = payload.get("name") or ""
        repo_id = f"{payload.get('organization') or USER}/{name}"
        private = payload.get("visibility", "public") == "private" or bool(payload.get("private"))
        repo = self.emulator.create_repo(repo_id, payload.get("type") or "model", private)
        self._json({"url": repo.web_url(self.emulator.url), "name": repo_id, "id": repo_id})

    def handle_delete_repo(self) -> None:
        payload = self._json_body()
        repo_id = f"{payload.get('organization') or USER}/{payload.get('name') or ''}"
        self.emulator.delete_repo(repo_id, payload.get("type") or "model")
        self._json({})

    def handle_update_settings(self, type: str, namespace: str, name: str) -> None:
        repo = self._repo(namespace, name, type)
        payload = self._json_body()
        with self.emulator._lock:
            meta = repo.meta()
            if "private" in payload:
                meta["private"] = bool(payload["private"])
            if "visibility" in payload:
                meta["private"] = payload["visibility"] == "private"
            _write_json(repo.dir / "meta.json", meta)
        self._json({})

    def handle_repo_info(self, type: str, namespace: str, name: str, revision: str = "main") -> None:
        repo = self._repo(namespace, name, type)
        commit_id = repo.resolve(revision)
        commit, meta = repo.commit(commit_id), repo.meta()
        files = commit["files"]
        card = None
        if "README.md" in files:
            readme = (repo.snapshot(commit_id) / "README.md").read_text(errors="replace")
            with contextlib.suppress(yaml.YAMLError):
                card = front_matter(readme)
        card_dict = card or {}
        card_tags = card_dict.get("tags") or []
        tags = [card_dict.get("library_name"), *([card_tags] if isinstance(card_tags, str) else card_tags)]
        tags.append(card_dict.get("pipeline_tag"))
        tags.append(f"license:{card_dict['license']}" if card_dict.get("license") else None)
        siblings = []
        for path, entry in sorted(files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if self._flag("blobs"):
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if entry["lfs"]:
                    pointer_size = len(_lfs_pointer(entry["sha256"], entry["size"]))
                    sibling["lfs"] = {"size": entry["size"], "sha256": entry["sha256"], "pointerSize": pointer_size}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.id.encode()).hexdigest()[:24], "id": repo.id, "author": repo.namespace,
            "sha": commit_id, "lastModified": commit["date"], "createdAt": meta["createdAt"],
            "private": meta["private"], "gated": False, "disabled": False, "downloads": 0, "likes": 0,
            "tags": list(dict.fromkeys(tag for tag in tags if isinstance(tag, str) and tag)),
            "cardData": card, "siblings": siblings,
        }
        if repo.type == "model":
            info.update(modelId=repo.id, pipeline_tag=card_dict.get("pipeline_tag"),
                        library_name=card_dict.get("library_name"), **{"model-index": card_dict.get("model-index")})
        elif repo.type == "space":
            info.update(sdk=card_dict.get("sdk"))
        self._json(info)

    # ----- uploads and commits ---------------------------------------------------------------------------------------

    def handle_preupload(self, type: str, namespace: str, name: str, revision: str) -> None:
        repo = self._repo(namespace, name, type)
        payload = self._json_body()
        if self._flag("create_pr"):
            raise HubError(501, "Pull requests are not supported by the hub emulator.")
        existing = repo.commit(repo.resolve(revision))["files"]
        answer = []
        for file in payload.get("files", []):
            path = file.get("path", "")
            lfs = Path(path).suffix.lower() in LFS_EXTENSIONS or int(file.get("size") or 0) > LFS_MIN_SIZE
            entry = existing.get(path)
            oid = None  # lets the client skip unchanged files: sha256 for LFS files, git blob sha1 otherwise
            if entry is not None and entry["lfs"] == lfs:
                oid = entry["sha256"] if lfs else entry["oid"]
            answer.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._json({"files": answer, "commitOid": None})

    def handle_lfs_batch(self, namespace: str, name: str, prefix: str | None = None) -> None:
        self._repo(namespace, name, prefix=prefix)
        payload = self._json_body()
        if payload.get("operation") != "upload":
            raise HubError(400, "The hub emulator only supports LFS uploads (downloads go through /resolve/).")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = str(obj.get("oid", "")), int(obj.get("size") or 0)
            answer: dict[str, Any] = {"oid": oid, "size": size}
            if not re.fullmatch(r"[0-9a-f]{64}", oid):
                answer["error"] = {"code": 422, "message": f"Invalid sha256 oid {oid!r}"}
            elif not self._lfs_stored(oid, size):
                answer["authenticated"] = True
                answer["actions"] = {"upload": {"href": f"{self.emulator.url}/lfs-upload/{oid}", "expires_in": 3600}}
            objects.append(answer)  # no "actions": already stored
        self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                   content_type="application/vnd.git-lfs+json")

    def _lfs_stored(self, oid: str, size: int) -> bool:
        obj = self.emulator.lfs_object(oid)
        return obj.is_file() and obj.stat().st_size == size

    def handle_lfs_upload(self, oid: str) -> None:
        target = self.emulator.lfs_object(oid)
        digest = hashlib.sha256()
        with tempfile.NamedTemporaryFile(dir=self.emulator.root / "tmp", delete=False) as tmp:
            try:
                for chunk in self._body_chunks():
                    digest.update(chunk)
                    tmp.write(chunk)
                tmp.close()
                if digest.hexdigest() != oid:
                    raise HubError(400, f"Uploaded content has sha256 {digest.hexdigest()}, not {oid}.")
                os.replace(tmp.name, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp.name)
        self._send(200, b"", "text/plain")

    def handle_commit(self, type: str, namespace: str, name: str, revision: str) -> None:
        body = self._body()
        if self.emulator.fail_commits is not None:
            raise HubError(500, self.emulator.fail_commits)
        repo = self._repo(namespace, name, type)
        if self._flag("create_pr"):
            raise HubError(501, "Pull requests are not supported by the hub emulator.")
        header: dict = {}
        operations: list[tuple[str, dict]] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise HubError(400, f"Invalid ndjson line: {error}") from None
            if item.get("key") == "header":
                header = item.get("value") or {}
            else:
                operations.append((item.get("key"), item.get("value") or {}))
        commit_id = self.emulator.commit(repo, revision, header, operations)
        self._json({"commitUrl": f"{repo.web_url(self.emulator.url)}/commit/{commit_id}", "commitOid": commit_id,
                    "pullRequestUrl": None, "success": True})

    # ----- branches and refs -----------------------------------------------------------------------------------------

    def handle_create_branch(self, type: str, namespace: str, name: str, branch: str) -> None:
        repo = self._repo(namespace, name, type)
        self.emulator.create_branch(repo, branch, self._json_body().get("startingPoint"))
        self._json({})

    def handle_delete_branch(self, type: str, namespace: str, name: str, branch: str) -> None:
        self.emulator.delete_branch(self._repo(namespace, name, type), branch)
        self._json({})

    def handle_refs(self, type: str, namespace: str, name: str) -> None:
        refs = self._repo(namespace, name, type).refs()
        branches = [{"name": branch, "ref": f"refs/heads/{branch}", "targetCommit": commit_id}
                    for branch, commit_id in sorted(refs.items())]
        self._json({"branches": branches, "tags": [], "converts": [], "pullRequests": []})

    # ----- tree, paths-info, files -----------------------------------------------------------------------------------

    def _tree_entry(self, repo: _Repo, commit_id: str, files: dict[str, dict], path: str, expand: bool) -> dict:
        """A ``list_repo_tree`` / ``get_paths_info`` item for a file or directory of commit `commit_id`."""
        if path in files:
            entry = files[path]
            item: dict[str, Any] = {"type": "file", "path": path, "size": entry["size"], "oid": entry["oid"]}
            if entry["lfs"]:
                pointer_size = len(_lfs_pointer(entry["sha256"], entry["size"]))
                item["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": pointer_size}
        else:
            item = {"type": "directory", "path": path, "oid": _tree_oid(files, path)}
        if expand:
            item["lastCommit"] = self._last_commit(repo, commit_id, path, item["oid"])
        return item

    @staticmethod
    def _last_commit(repo: _Repo, commit_id: str, path: str, oid: str) -> dict:
        """The oldest commit in the unbroken run of ancestors in which `path` has this `oid`."""
        commit = repo.commit(commit_id)
        while commit["parent"] is not None:
            parent = repo.commit(commit["parent"])
            files = parent["files"]
            if path in files:
                parent_oid = files[path]["oid"]
            else:
                parent_oid = _tree_oid(files, path) if path in _directories(files) else None
            if parent_oid != oid:
                break
            commit = parent
        return {"id": commit["id"], "title": commit["title"], "date": commit["date"]}

    def handle_tree(self, type: str, namespace: str, name: str, revision: str, path: str = "") -> None:
        repo = self._repo(namespace, name, type)
        commit_id = repo.resolve(revision)
        files = repo.commit(commit_id)["files"]
        directories = _directories(files)
        base = path.strip("/")
        if base and base not in directories:
            raise HubError(404, f"{base} does not exist on {revision!r}" if base not in files else
                           f"{base} is a file, not a directory", "EntryNotFound", {"X-Repo-Commit": commit_id})
        recursive, expand = self._flag("recursive"), self._flag("expand")
        prefix = f"{base}/" if base else ""
        paths = [p for p in sorted(directories) + sorted(files)
                 if p.startswith(prefix) and (recursive or "/" not in p[len(prefix):])]
        self._json([self._tree_entry(repo, commit_id, files, p, expand) for p in paths])

    def handle_paths_info(self, type: str, namespace: str, name: str, revision: str) -> None:
        repo = self._repo(namespace, name, type)
        commit_id = repo.resolve(revision)
        body = self._body()
        if "json" in self.headers.get("Content-Type", ""):
            payload = json.loads(body or b"{}")
            paths, expand = payload.get("paths", []), payload.get("expand", False)
            paths = [paths] if isinstance(paths, str) else paths
            expand = expand if isinstance(expand, bool) else str(expand).lower() in ("1", "true")
        else:  # form-encoded: paths=a&paths=b&expand=False
            form = parse_qs(body.decode(), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = form.get("expand", ["false"])[-1].lower() in ("1", "true")
        files = repo.commit(commit_id)["files"]
        directories = _directories(files)
        existing = [p.strip("/") for p in paths if p.strip("/") in files or p.strip("/") in directories]
        self._json([self._tree_entry(repo, commit_id, files, p, expand) for p in existing])

    def handle_resolve(self, namespace: str, name: str, revision: str, path: str, prefix: str | None = None) -> None:
        repo = self._repo(namespace, name, prefix=prefix)
        commit_id = repo.resolve(revision)
        entry = repo.commit(commit_id)["files"].get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit_id})
        etag = entry["sha256"] if entry["lfs"] else entry["oid"]
        headers = {"X-Repo-Commit": commit_id, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        size = entry["size"]
        start, end, status = 0, size - 1, 200
        range_header = self.headers.get("Range")
        match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", range_header or "")
        if match is not None and match.group(1) + match.group(2):
            first, last = match.groups()
            if first:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
            else:  # suffix range: the last N bytes
                start, end = max(0, size - int(last)), size - 1
            if start >= size or start > end:
                self._send(416, b"", "text/plain", {**headers, "Content-Range": f"bytes */{size}"})
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(max(length, 0)))
        self.end_headers()
        self._responded = True
        if self.command == "HEAD" or length <= 0:
            return
        with open(repo.snapshot(commit_id) / path, "rb") as file:
            file.seek(start)
            while length > 0:
                chunk = file.read(min(length, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                length -= len(chunk)


def client_env(endpoint: str, hf_home: str | Path, token: str = "hf_emulator_token") -> dict[str, str]:
    """``os.environ`` for a client subprocess that talks to the emulator at `endpoint`, with its own `hf_home` cache.

    huggingface_hub, transformers and datasets read these variables at import time, hence the subprocess."""
    env = dict(os.environ)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_CACHE", "HF_DATASETS_CACHE",
                 "HUGGINGFACE_HUB_CACHE"):
        env.pop(name, None)
    env.update({
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": token,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    })
    return env
