"""LLM coarsener: iterative summarization through a chat-completions endpoint.

The seed recipe of DESIGN §1. Given a question and its full solution, with T
levels:

  1. d_{T-1} = the solution, unchanged.
  2. For k = T-2 down to 0: ask the LLM for a shorter, more abstract version
     of d_{k+1} that keeps the plan and drops details; the reply is d_k.
  3. Return [d_0, ..., d_{T-1}], coarse -> fine.

The HTTP side (cache, retries, rate limit, key handling) is
`chat_client.ChatClient`. Example:

  client = ChatClient(cache_dir="/tmp/llm_cache", max_requests_per_s=2)
  coarsener = LLMCoarsener(client, num_levels=3)
  traj = coarsener.to_trajectory("gsm8k", "17", question, solution, "42")
"""

from __future__ import annotations

import logging

from data_pipelines.coarseners.chat_client import (  # noqa: F401 (re-exported)
  API_KEY_ENVS,
  BASE_URL_ENVS,
  MODEL_ENVS,
  ChatClient,
  LLMError,
  Message,
  ReplyCache,
  cache_key,
)
from data_pipelines.trajectory import DataError, Trajectory

logger = logging.getLogger(__name__)

# Enters the cache key: bump it whenever the prompt or the handling of replies
# changes, so replies made under an old recipe are not reused.
PROMPT_VERSION = "summarize-v1"
SYSTEM_PROMPT = (
  "You turn worked solutions into coarser drafts of themselves. A coarser "
  "draft is what a careful solver writes before working out the details: "
  "the plan, in order, without the routine work."
)
# The draft sits between tags so that the model (and the test server) can tell
# it apart from the instructions.
USER_PROMPT = """\
Here is a question and a draft of its solution.

<question>
{question}
</question>

<draft>
{draft}
</draft>

Rewrite the draft as a shorter, more abstract version of itself, about half \
as long:
- keep the plan: the main steps, in the same order;
- drop details: routine arithmetic, restated facts, explanations of obvious \
steps;
- keep the final answer if the draft states one;
- do not add steps, fix mistakes or change the reasoning.
Reply with the shorter draft only: plain text, no preamble, no tags."""

# Server text quoted in an error is cut to this many characters.


def summary_messages(question: str, draft: str) -> list[Message]:
  """The chat messages that ask for a coarser version of `draft`.

  Args:
    question: the question the draft answers (context for the summary).
    draft: the draft to summarize.

  Returns:
    A system and a user message.
  """
  return [
    {"role": "system", "content": SYSTEM_PROMPT},
    {
      "role": "user",
      "content": USER_PROMPT.format(question=question, draft=draft),
    },
  ]


class LLMCoarsener:
  """Coarsens a full solution by repeated LLM summarization.

  Attributes:
    client: the chat client.
    num_levels: drafts per trajectory, the full solution included.
  """

  def __init__(self, client: ChatClient, num_levels: int):
    """Builds a coarsener.

    Args:
      client: a ChatClient, or anything with its `complete` method.
      num_levels: drafts per trajectory, >= 1; 1 keeps only the solution.
    """
    if num_levels < 1:
      raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    self.client = client
    self.num_levels = num_levels

  def coarsen(self, question: str, solution: str) -> list[str]:
    """Drafts coarse -> fine; the last is `solution`, unchanged.

    Args:
      question: the question (context for every summary).
      solution: the full worked solution.

    Returns:
      `num_levels` drafts; each but the last summarizes the next one.

    Raises:
      DataError: empty solution; LLMError: a failed call or empty summary.
    """
    if not solution.strip():
      raise DataError("LLM coarsener: the solution is empty")
    drafts = [solution]
    for _ in range(self.num_levels - 1):
      level = self.num_levels - 1 - len(drafts)
      reply = self.client.complete(
        summary_messages(question, drafts[-1]), version=PROMPT_VERSION
      )
      summary = reply.strip()
      if not summary:
        raise LLMError(f"LLM coarsener: empty summary for draft {level}")
      if len(summary) >= len(drafts[-1]):
        # Kept (a terse draft may not shrink), but worth a look.
        sizes = f"{len(summary)} >= {len(drafts[-1])} chars"
        logger.warning("LLM coarsener: draft %d not shorter (%s)", level, sizes)
      drafts.append(summary)
    return drafts[::-1]

  def to_trajectory(
    self, task_name: str, id: str, question: str, solution: str, answer: str
  ) -> Trajectory:
    """A trajectory whose drafts come from `coarsen`.

    Args:
      task_name: the task, e.g. `gsm8k`.
      id: the trajectory id.
      question: the question.
      solution: the full worked solution (the last draft).
      answer: the canonical final answer.

    Returns:
      The trajectory.
    """
    return Trajectory(
      id=id,
      task=task_name,
      question=question,
      drafts=tuple(self.coarsen(question, solution)),
      answer=answer,
    )
