"""An OpenAI-compatible chat-completions client (standard library only).

`ChatClient` caches replies on disk, one JSON file per content hash (written
atomically), retries 429/5xx and connection errors with exponential backoff
and jitter, and spaces requests by a minimum interval. The API key goes into
the Authorization header and nowhere else: not into repr(), logs, error
messages or the cache. Redirects are refused (urllib would resend the
Authorization header to wherever they point).

Configuration comes from arguments, else $BOTTOMUP_LLM_BASE_URL,
$BOTTOMUP_LLM_MODEL and $BOTTOMUP_LLM_API_KEY ($OPENAI_BASE_URL and
$OPENAI_API_KEY are fallbacks).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import pathlib
import random
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence

from data_pipelines.trajectory import DataError

BASE_URL_ENVS = ("BOTTOMUP_LLM_BASE_URL", "OPENAI_BASE_URL")
MODEL_ENVS = ("BOTTOMUP_LLM_MODEL",)
API_KEY_ENVS = ("BOTTOMUP_LLM_API_KEY", "OPENAI_API_KEY")

_MAX_QUOTE = 300
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")

Message = dict[str, str]
logger = logging.getLogger(__name__)


class LLMError(DataError):
  """A failed call or a malformed reply; the message says what was wrong."""


class _RetryableError(Exception):
  """A failure worth retrying (429, 5xx, connection); internal only."""

  def __init__(self, message: str, retry_after_s: float | None = None):
    super().__init__(message)
    self.retry_after_s = retry_after_s


class _NoRedirect(urllib.request.HTTPRedirectHandler):
  """Refuses redirects: urllib would resend the Authorization header to any
  host a redirect names, and would turn the POST into a GET."""

  def redirect_request(self, req, fp, code, msg, headers, newurl):
    return None


def _first_env(names: Sequence[str]) -> str | None:
  return next((os.environ[n] for n in names if os.environ.get(n)), None)


def _required(value: str | None, arg: str, envs: Sequence[str]) -> str:
  """`value`, else the first set variable of `envs`, else a clear error."""
  value = value or _first_env(envs)
  if not value:
    hint = " or ".join(f"${n}" for n in envs)
    raise ValueError(f"no LLM {arg}: pass {arg}= or set {hint}")
  return value


def cache_key(
  model: str, messages: Sequence[Message], temperature: float, version: str
) -> str:
  """The sha256 hex digest naming a request's cache entry.

  The base URL is left out on purpose: the same model behind another address
  gives the same reply, so moving a server keeps the cache valid.

  Args:
    model: model name.
    messages: chat messages.
    temperature: sampling temperature.
    version: prompt version.

  Returns:
    64 hex characters.
  """
  record = dict(model=model, messages=list(messages), temperature=temperature)
  record["prompt_version"] = version
  blob = json.dumps(record, sort_keys=True, ensure_ascii=False)
  return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ReplyCache:
  """One JSON file per reply, named by its cache key, written atomically."""

  def __init__(self, root: str | os.PathLike):
    self.root = pathlib.Path(root)
    self.root.mkdir(parents=True, exist_ok=True)

  def path(self, key: str) -> pathlib.Path:
    return self.root / f"{key}.json"

  def get(self, key: str) -> str | None:
    """The cached reply content, or None on a miss."""
    path = self.path(key)
    try:
      record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
      return None
    except (OSError, ValueError) as e:
      # Atomic writes make this rare (a hand edit, a full disk): ask again.
      logger.warning("ignoring unreadable LLM cache entry %s: %s", path, e)
      return None
    content = record.get("content") if isinstance(record, dict) else None
    if not isinstance(content, str) or not content.strip():
      logger.warning("ignoring LLM cache entry without content: %s", path)
      return None
    return content

  def put(self, key: str, record: dict) -> None:
    """Writes `record` under `key`: a temp file, then an atomic rename, so an
    interrupted run never leaves a half-written entry."""
    fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".json")
    try:
      with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f, ensure_ascii=False, indent=1)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, self.path(key))
    except BaseException:
      pathlib.Path(tmp).unlink(missing_ok=True)
      raise


class ChatClient:
  """A chat-completions client with a disk cache, retries and a rate limit.

  Attributes:
    base_url: endpoint root, e.g. `https://api.openai.com/v1`.
    url: where requests go, `{base_url}/chat/completions`.
    model: model name sent with every request.
    temperature: sampling temperature (0 keeps the cache meaningful).
    cache: the reply cache, or None.
    num_requests: HTTP requests sent so far, retries included.
  """

  def __init__(
    self,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    *,
    temperature: float = 0.0,
    cache_dir: str | os.PathLike | None = None,
    max_retries: int = 5,
    backoff_s: float = 1.0,
    max_backoff_s: float = 60.0,
    max_requests_per_s: float | None = None,
    timeout_s: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
  ):
    """Builds a client; arguments left None come from the environment.

    Args:
      base_url: e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8000/v1`.
      model: model name.
      api_key: bearer token; may be empty for local servers.
      temperature: sampling temperature.
      cache_dir: folder of the reply cache; None disables caching.
      max_retries: retries after the first attempt on 429/5xx/connection errors.
      backoff_s: first retry delay; it doubles per retry, with jitter.
      max_backoff_s: cap on one retry delay (also on a server's Retry-After).
      max_requests_per_s: rate limit; None or 0 for none.
      timeout_s: socket timeout of one request.
      sleep: sleep function (injectable for tests).
      clock: monotonic clock in seconds (injectable for tests).
      rng: jitter source (injectable for tests).
    """
    base_url = _required(base_url, "base_url", BASE_URL_ENVS)
    self.model = _required(model, "model", MODEL_ENVS)
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
      raise ValueError(f"LLM base URL must be http(s)://host/...: {base_url!r}")
    self.base_url = base_url.rstrip("/")
    self.url = f"{self.base_url}/chat/completions"
    # Private, and left out of __repr__: the key must not leak anywhere.
    self._api_key = api_key if api_key is not None else _first_env(API_KEY_ENVS)
    plain = parts.scheme == "http" and parts.hostname not in _LOCAL_HOSTS
    if self._api_key and plain:
      logger.warning(
        "the LLM API key goes over plain http to %s", parts.hostname
      )
    if max_retries < 0:
      raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    self.temperature = temperature
    self.cache = ReplyCache(cache_dir) if cache_dir is not None else None
    self.max_retries = max_retries
    self.backoff_s = backoff_s
    self.max_backoff_s = max_backoff_s
    rate = max_requests_per_s
    self.min_interval_s = 1.0 / rate if rate else 0.0
    self.timeout_s = timeout_s
    self.num_requests = 0
    self._sleep = sleep
    self._clock = clock
    self._rng = rng or random.Random()
    self._lock = threading.Lock()
    self._last_start: float | None = None
    self._opener = urllib.request.build_opener(_NoRedirect)

  def __repr__(self) -> str:
    key = "<set>" if self._api_key else "<unset>"
    cache = self.cache.root if self.cache else None
    return (
      f"ChatClient(base_url={self.base_url!r}, model={self.model!r}, "
      f"api_key={key}, cache_dir={str(cache) if cache else None!r})"
    )

  def complete(self, messages: Sequence[Message], *, version: str = "") -> str:
    """The assistant's reply to `messages`, from the cache or the server.

    Args:
      messages: chat messages ({"role", "content"} dicts).
      version: prompt version; part of the cache key.

    Returns:
      The reply content, unstripped and non-empty.

    Raises:
      LLMError: the server refused, kept failing, or sent a malformed reply.
    """
    messages = [dict(m) for m in messages]
    key = cache_key(self.model, messages, self.temperature, version)
    if self.cache and (hit := self.cache.get(key)) is not None:
      return hit
    payload = {
      "model": self.model,
      "messages": messages,
      "temperature": self.temperature,
    }
    body = self._post_with_retries(json.dumps(payload).encode("utf-8"))
    content = self._parse_reply(body)
    if self.cache:
      self.cache.put(
        key, payload | {"prompt_version": version, "content": content}
      )
    return content

  def _quote(self, body: bytes | str) -> str:
    """Server text for an error message: redacted, cut short."""
    if isinstance(body, bytes):
      body = body.decode("utf-8", errors="replace")
    body = body.strip()
    if self._api_key:  # A server may echo request headers in its error text.
      body = body.replace(self._api_key, "<redacted>")
    return body if len(body) <= _MAX_QUOTE else body[:_MAX_QUOTE] + "..."

  def _wait_for_slot(self) -> None:
    """Sleeps until `min_interval_s` has passed since the previous request."""
    if not self.min_interval_s:
      return
    # Held while sleeping, so threads sharing a client queue up in turn.
    with self._lock:
      if self._last_start is not None:
        wait = self._last_start + self.min_interval_s - self._clock()
        if wait > 0:
          self._sleep(wait)
      self._last_start = self._clock()

  def _backoff_delay_s(
    self, attempt: int, retry_after_s: float | None
  ) -> float:
    delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
    # Equal jitter: parallel workers that failed together do not all come
    # back at the same instant.
    delay = delay / 2 + self._rng.uniform(0, delay / 2)
    if retry_after_s is not None:
      delay = max(delay, retry_after_s)
    return min(delay, self.max_backoff_s)

  def _post_with_retries(self, payload: bytes) -> bytes:
    for attempt in range(self.max_retries + 1):
      try:
        return self._post(payload)
      except _RetryableError as e:
        last_error = e
        if attempt == self.max_retries:
          break
        delay = self._backoff_delay_s(attempt, e.retry_after_s)
        retry = f"{attempt + 1}/{self.max_retries}"
        logger.warning(
          "LLM call failed (%s); retry %s in %.1fs", e, retry, delay
        )
        self._sleep(delay)
    raise LLMError(
      f"{self.url}: gave up after {self.max_retries + 1} attempts; last "
      f"error: {last_error}"
    )

  def _post(self, payload: bytes) -> bytes:
    """One HTTP request; retryable failures raise _RetryableError."""
    self._wait_for_slot()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if self._api_key:
      headers["Authorization"] = f"Bearer {self._api_key}"
    request = urllib.request.Request(
      self.url, data=payload, headers=headers, method="POST"
    )
    self.num_requests += 1
    try:
      with self._opener.open(request, timeout=self.timeout_s) as response:
        return response.read()
    except urllib.error.HTTPError as e:
      status = f"HTTP {e.code}: {self._server_message(e)}"
      if e.code == 429 or e.code >= 500:
        raise _RetryableError(status, _retry_after_s(e.headers)) from None
      if 300 <= e.code < 400:
        status += f" (redirect to {e.headers.get('Location')}; fix base_url)"
      raise LLMError(f"{self.url}: {status}") from None
    except urllib.error.URLError as e:
      raise _RetryableError(f"connection error: {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
      # Timeouts, resets and truncated replies arrive here, not as URLError.
      raise _RetryableError(f"connection error: {e!r}") from None

  def _server_message(self, error: urllib.error.HTTPError) -> str:
    """The server's explanation of an HTTP error (OpenAI's error.message if
    it sends one), redacted and cut short."""
    try:
      body = error.read()
    except (OSError, http.client.HTTPException):
      return error.reason or "(no body)"
    try:
      message = json.loads(body)["error"]["message"]
      if isinstance(message, str):
        return self._quote(message)
    except (ValueError, KeyError, TypeError):
      pass
    return self._quote(body) or str(error.reason)

  def _parse_reply(self, body: bytes) -> str:
    """choices[0].message.content of a reply, or an LLMError saying why not."""
    where = f"{self.url}: malformed reply"
    try:
      reply = json.loads(body)
    except ValueError as e:
      raise LLMError(
        f"{where}: not JSON ({e}): {self._quote(body)!r}"
      ) from None
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not isinstance(choices, list) or not choices:
      raise LLMError(f"{where}: no choices: {self._quote(body)!r}")
    first = choices[0] if isinstance(choices[0], dict) else {}
    message = first.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str) or not content.strip():
      raise LLMError(
        f"{where}: empty content (finish_reason="
        f"{first.get('finish_reason')!r}): {self._quote(body)!r}"
      )
    return content


def _retry_after_s(headers) -> float | None:
  """A numeric Retry-After header in seconds (the HTTP-date form is ignored)."""
  value = headers.get("Retry-After") if headers else None
  try:
    return max(0.0, float(value)) if value is not None else None
  except ValueError:
    return None
