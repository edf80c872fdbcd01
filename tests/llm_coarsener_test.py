"""Tests of the LLM coarsener against a local chat-completions server.

The server (http.server on 127.0.0.1, port 0, in a thread) records requests
and replies with the first half of the words of the draft it is sent, so
summaries are deterministic. Sleeps and clocks are fakes: no test waits.
"""

import http.server
import json
import pathlib
import random
import socket
import threading

import pytest

from data_pipelines.coarseners import chat_client, llm

KEY = "sk-test-SECRET-0123456789"
MODEL = "fake-model-1"
QUESTION = "A shop sells 12 apples a day for 5 days. How many apples?"
SOLUTION = (
  "The shop sells 12 apples each day. Over 5 days it sells 12 apples per "
  "day times 5 days. Multiply: 12 * 5 = 60. So the shop sells 60 apples in "
  "total. The answer is 60."
)


class FakeChatServer:
  """A chat-completions endpoint with scripted failures.

  Attributes:
    requests: one {"path", "headers", "body"} dict per request received.
    fail_first: how many requests, from now, get `fail_status`.
    fail_status: the status of the scripted failures.
    mode: `ok`, `not_json`, `no_choices`, `empty`, `bad_request` or
      `redirect`.
  """

  def __init__(self):
    self.requests = []
    self.fail_first = 0
    self.fail_status = 500
    self.mode = "ok"
    self.httpd = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    self.httpd.fake = self
    # A short poll interval keeps shutdown (each test's teardown) fast.
    self.thread = threading.Thread(
      target=self.httpd.serve_forever, args=(0.05,), daemon=True
    )
    self.thread.start()

  @property
  def base_url(self) -> str:
    return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()
    self.thread.join(timeout=5)

  def reply(self, request: dict) -> tuple[int, bytes, dict]:
    """Status, body and extra headers for one recorded request."""
    if self.fail_first > 0:
      self.fail_first -= 1
      body = json.dumps({"error": {"message": "overloaded, try later"}})
      return self.fail_status, body.encode(), {"Retry-After": "0"}
    if self.mode == "bad_request":
      # Echoes the header, as a careless proxy might: the client must redact.
      message = f"invalid model; got auth {request['headers']['Authorization']}"
      return 400, json.dumps({"error": {"message": message}}).encode(), {}
    if self.mode == "redirect":
      return 302, b"", {"Location": "http://elsewhere.invalid/steal"}
    if self.mode == "not_json":
      return 200, b"<html>Bad Gateway</html>", {}
    if self.mode == "no_choices":
      return 200, json.dumps({"choices": []}).encode(), {}
    content = "   " if self.mode == "empty" else _first_half(request["body"])
    reply = {
      "choices": [{"message": {"role": "assistant", "content": content}}],
    }
    return 200, json.dumps(reply).encode(), {}


def _first_half(body: dict) -> str:
  """The first half of the words of the draft in the user message."""
  user = body["messages"][-1]["content"]
  draft = user.split("<draft>\n", 1)[1].split("\n</draft>", 1)[0]
  words = draft.split()
  return " " + " ".join(words[: max(1, len(words) // 2)]) + "\n"


class _Handler(http.server.BaseHTTPRequestHandler):
  def do_POST(self):
    fake = self.server.fake
    length = int(self.headers["Content-Length"])
    request = {
      "path": self.path,
      "headers": dict(self.headers),
      "body": json.loads(self.rfile.read(length)),
    }
    fake.requests.append(request)
    status, body, headers = fake.reply(request)
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(body)))
    for name, value in headers.items():
      self.send_header(name, value)
    self.end_headers()
    self.wfile.write(body)

  def log_message(self, format, *args):
    pass  # Keeps test output clean.


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch):
  # A proxy would route 127.0.0.1 away; a real key must not reach the tests.
  for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
    monkeypatch.delenv(name, raising=False)
  for name in llm.BASE_URL_ENVS + llm.MODEL_ENVS + llm.API_KEY_ENVS:
    monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
  fake = FakeChatServer()
  yield fake
  fake.close()


def make_client(server, tmp_path, **kwargs):
  sleeps = []
  kwargs = {
    "cache_dir": tmp_path / "cache",
    "sleep": sleeps.append,
    "rng": random.Random(0),
    "timeout_s": 5,
  } | kwargs
  client = llm.ChatClient(server.base_url, MODEL, KEY, **kwargs)
  return client, sleeps


def assert_no_key(tmp_path: pathlib.Path, *texts: str):
  for text in texts:
    assert KEY not in text
  for path in tmp_path.rglob("*"):
    if path.is_file():
      assert KEY.encode() not in path.read_bytes(), path


def test_trajectory_and_requests(server, tmp_path):
  client, sleeps = make_client(server, tmp_path)
  coarsener = llm.LLMCoarsener(client, num_levels=4)
  traj = coarsener.to_trajectory("gsm8k", "7", QUESTION, SOLUTION, "60")
  assert (traj.id, traj.task, traj.question, traj.answer) == (
    "7",
    "gsm8k",
    QUESTION,
    "60",
  )
  assert len(traj.drafts) == 4
  assert traj.drafts[-1] == SOLUTION
  lengths = [len(d.split()) for d in traj.drafts]
  assert lengths == sorted(lengths) and len(set(lengths)) == 4
  # Replies are stripped, and each draft is the first half of the next.
  for coarse, fine in zip(traj.drafts, traj.drafts[1:]):
    assert coarse == coarse.strip()
    assert fine.split()[: len(fine.split()) // 2] == coarse.split()
  assert len(server.requests) == 3 and client.num_requests == 3
  for i, request in enumerate(server.requests):
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    body = request["body"]
    assert body["model"] == MODEL and body["temperature"] == 0.0
    assert body["messages"] == llm.summary_messages(
      QUESTION, traj.drafts[-1 - i]
    )
  assert not sleeps


def test_single_level_makes_no_call(server, tmp_path):
  client, _ = make_client(server, tmp_path)
  assert llm.LLMCoarsener(client, 1).coarsen(QUESTION, SOLUTION) == [SOLUTION]
  assert not server.requests
  with pytest.raises(ValueError, match="num_levels"):
    llm.LLMCoarsener(client, 0)


def test_cache_hits_make_no_requests(server, tmp_path):
  client, _ = make_client(server, tmp_path)
  first = llm.LLMCoarsener(client, 3).coarsen(QUESTION, SOLUTION)
  assert len(server.requests) == 2
  assert llm.LLMCoarsener(client, 3).coarsen(QUESTION, SOLUTION) == first
  assert len(server.requests) == 2
  # A fresh client on the same folder reads the same entries.
  again, _ = make_client(server, tmp_path)
  assert llm.LLMCoarsener(again, 3).coarsen(QUESTION, SOLUTION) == first
  assert len(server.requests) == 2 and again.num_requests == 0
  files = sorted(p.name for p in (tmp_path / "cache").iterdir())
  assert len(files) == 2 and all(len(f) == 64 + 5 for f in files)
  # Another temperature is another request.
  hot, _ = make_client(server, tmp_path, temperature=0.5)
  llm.LLMCoarsener(hot, 2).coarsen(QUESTION, SOLUTION)
  assert len(server.requests) == 3


def test_cache_key_covers_every_input():
  messages = llm.summary_messages(QUESTION, SOLUTION)
  base = llm.cache_key(MODEL, messages, 0.0, "v1")
  assert len(base) == 64
  assert llm.cache_key(MODEL, messages, 0.0, "v1") == base
  assert llm.cache_key("other", messages, 0.0, "v1") != base
  assert llm.cache_key(MODEL, messages[1:], 0.0, "v1") != base
  assert llm.cache_key(MODEL, messages, 0.7, "v1") != base
  assert llm.cache_key(MODEL, messages, 0.0, "v2") != base


def test_interrupted_cache_write_leaves_nothing(tmp_path, monkeypatch):
  cache = llm.ReplyCache(tmp_path)

  def dump_then_die(obj, f, **kwargs):
    f.write('{"content": "half')
    raise KeyboardInterrupt

  monkeypatch.setattr(chat_client.json, "dump", dump_then_die)
  with pytest.raises(KeyboardInterrupt):
    cache.put("k", {"content": "full"})
  assert list(tmp_path.iterdir()) == []
  assert cache.get("k") is None


def test_retries_then_succeeds(server, tmp_path):
  client, sleeps = make_client(server, tmp_path, backoff_s=1.0)
  server.fail_first = 3
  drafts = llm.LLMCoarsener(client, 2).coarsen(QUESTION, SOLUTION)
  assert drafts[-1] == SOLUTION and len(server.requests) == 4
  assert len(sleeps) == 3
  # Exponential with equal jitter: attempt i waits in [2**i / 2, 2**i].
  for i, delay in enumerate(sleeps):
    assert 2**i / 2 <= delay <= 2**i


def test_429_is_retried(server, tmp_path):
  client, sleeps = make_client(server, tmp_path)
  server.fail_first, server.fail_status = 2, 429
  assert llm.LLMCoarsener(client, 2).coarsen(QUESTION, SOLUTION)
  assert len(server.requests) == 3 and len(sleeps) == 2


def test_gives_up_after_max_retries(server, tmp_path):
  client, sleeps = make_client(server, tmp_path, max_retries=2)
  server.fail_first = 100
  with pytest.raises(llm.LLMError, match=r"gave up after 3 attempts.*HTTP 500"):
    llm.LLMCoarsener(client, 2).coarsen(QUESTION, SOLUTION)
  assert len(server.requests) == 3 and len(sleeps) == 2


def test_connection_errors_are_retried(tmp_path):
  with socket.socket() as s:  # A port nobody listens on.
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  sleeps = []
  client = llm.ChatClient(
    f"http://127.0.0.1:{port}/v1",
    MODEL,
    KEY,
    max_retries=2,
    sleep=sleeps.append,
    timeout_s=5,
  )
  with pytest.raises(llm.LLMError, match="gave up.*connection error") as e:
    client.complete(llm.summary_messages(QUESTION, SOLUTION))
  assert len(sleeps) == 2 and client.num_requests == 3
  assert KEY not in str(e.value)


def test_client_error_fails_at_once(server, tmp_path):
  client, sleeps = make_client(server, tmp_path)
  server.mode = "bad_request"
  with pytest.raises(llm.LLMError, match="HTTP 400: invalid model") as e:
    client.complete(llm.summary_messages(QUESTION, SOLUTION))
  assert len(server.requests) == 1 and not sleeps
  assert "<redacted>" in str(e.value)
  assert_no_key(tmp_path, str(e.value), repr(e.value))


def test_redirect_is_not_followed(server, tmp_path):
  # Following it would hand the Authorization header to another host.
  client, sleeps = make_client(server, tmp_path)
  server.mode = "redirect"
  with pytest.raises(llm.LLMError, match="HTTP 302.*elsewhere.invalid"):
    client.complete(llm.summary_messages(QUESTION, SOLUTION))
  assert len(server.requests) == 1 and not sleeps


@pytest.mark.parametrize(
  "mode, message",
  [
    ("not_json", "malformed reply: not JSON"),
    ("no_choices", "malformed reply: no choices"),
    ("empty", "malformed reply: empty content"),
  ],
)
def test_malformed_reply(server, tmp_path, mode, message):
  client, _ = make_client(server, tmp_path)
  server.mode = mode
  with pytest.raises(llm.LLMError, match=message) as e:
    llm.LLMCoarsener(client, 2).coarsen(QUESTION, SOLUTION)
  assert isinstance(e.value, ValueError)
  assert len(server.requests) == 1  # Not retried, and nothing cached.
  assert list((tmp_path / "cache").iterdir()) == []
  assert_no_key(tmp_path, str(e.value))


def test_empty_summary_is_rejected():
  class Blank:
    def complete(self, messages, *, version=""):
      return " \n "

  with pytest.raises(llm.LLMError, match="empty summary"):
    llm.LLMCoarsener(Blank(), 2).coarsen(QUESTION, SOLUTION)
  with pytest.raises(llm.DataError, match="solution is empty"):
    llm.LLMCoarsener(Blank(), 2).coarsen(QUESTION, "  ")


def test_rate_limit_spaces_requests(server, tmp_path):
  now = [100.0]
  sleeps = []

  def sleep(seconds):
    sleeps.append(seconds)
    now[0] += seconds

  client, _ = make_client(
    server,
    tmp_path,
    cache_dir=None,
    max_requests_per_s=2,
    sleep=sleep,
    clock=lambda: now[0],
  )
  for i in range(3):
    client.complete(llm.summary_messages(QUESTION, f"{SOLUTION} {i}"))
  assert sleeps == [0.5, 0.5]
  now[0] += 10  # Idle long enough: the next request goes at once.
  client.complete(llm.summary_messages(QUESTION, SOLUTION))
  assert sleeps == [0.5, 0.5] and len(server.requests) == 4


def test_key_never_leaks(server, tmp_path, caplog):
  client, _ = make_client(server, tmp_path)
  server.fail_first = 1  # Exercises the retry log line too.
  llm.LLMCoarsener(client, 3).coarsen(QUESTION, SOLUTION)
  assert "api_key=<set>" in repr(client)
  assert_no_key(tmp_path, repr(client), str(client), caplog.text)
  assert len(list((tmp_path / "cache").iterdir())) == 2
  remote = llm.ChatClient("http://example.com/v1", MODEL, KEY)
  assert "plain http to example.com" in caplog.text
  assert_no_key(tmp_path, repr(remote), caplog.text)


def test_config_from_env(monkeypatch, server):
  monkeypatch.setenv("OPENAI_BASE_URL", server.base_url + "/")
  monkeypatch.setenv("BOTTOMUP_LLM_MODEL", MODEL)
  monkeypatch.setenv("OPENAI_API_KEY", KEY)
  client = llm.ChatClient()
  assert client.base_url == server.base_url and client.model == MODEL
  client.complete(llm.summary_messages(QUESTION, SOLUTION))
  assert server.requests[-1]["headers"]["Authorization"] == f"Bearer {KEY}"
  # The bottomup variables win over the OpenAI ones.
  monkeypatch.setenv("BOTTOMUP_LLM_API_KEY", "sk-other")
  llm.ChatClient().complete(llm.summary_messages(QUESTION, "other draft x y"))
  assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-other"
  monkeypatch.delenv("BOTTOMUP_LLM_MODEL")
  with pytest.raises(ValueError, match=r"\$BOTTOMUP_LLM_MODEL"):
    llm.ChatClient()
  with pytest.raises(ValueError, match="http"):
    llm.ChatClient("file:///etc", MODEL)
