"""MCP prompts: ready-made requests a user can pick in the client (e.g. Claude's "+" menu)."""


from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.prompts.base import Message, UserMessage
from pydantic import Field

from continuum_mcp._mcp.memory_tools import Run
from continuum_mcp.memory.models import RecallResult

SAVE_LEARNINGS = """\
Look back over this conversation and save what is worth remembering in later conversations, \
using the `remember` tool once per memory.

- Save durable facts about me, my preferences, people and projects I mentioned, decisions we \
made and instructions I gave; skip small talk, one-off requests and anything already saved.
- One self-contained statement per memory, understandable without this conversation (names, not \
"he"; dates, not "tomorrow"). Pass `at` when it happened at a known earlier time.
- Add 1-3 short lowercase tags (a topic, a project, a person).
- Tag anything personal or sensitive (health, family, money, credentials, other people's details) \
as `private`, so that it never leaves this machine.
- If `remember` answers `updated`, tell me which earlier memory the new one replaces and ask \
whether to forget the old one; `duplicate` or `near_duplicate` means it was already known.

Finish with a short list of what you saved (ids and text)."""


def render_recall(topic: str, r: RecallResult) -> str:
    """The memories as the prompt shows them: current versions, ids, tags and dates."""
    if r.no_good_match or not r.hits:
        return (f"I asked my memory about {topic!r} and nothing relevant is stored. Say so briefly, then help "
                "me with the topic; offer to remember what I tell you about it.")
    lines = [f"Here is what my long-term memory holds about {topic!r} (best match first):", ""]
    for h in r.hits:
        m = h.memory
        note = f"; older version, updated by #{m.superseded_by}" if m.superseded_by else ""
        tags = f" [{', '.join(m.tags)}]" if m.tags else ""
        lines.append(f"- #{m.id} ({m.created_at:%Y-%m-%d}{note}){tags}: {m.text}")
    lines += ["", "Use these as context for what follows. Prefer current versions over older ones; if something "
                  "here looks outdated or wrong, ask me and then update or forget it."]
    return "\n".join(lines)


def register_prompts(mcp: MCPServer[Any], run: Run) -> None:
    @mcp.prompt(title="Save what you learned")
    def save_conversation_learnings() -> list[Message]:
        """Ask the assistant to save the durable facts, preferences and decisions of this
        conversation as memories (tagged, sensitive ones private)."""
        return [UserMessage(SAVE_LEARNINGS)]

    @mcp.prompt(title="Recall context for a topic")
    async def recall_context(
        topic: Annotated[str, Field(description="What the conversation is going to be about.")],
    ) -> list[Message]:
        """Recall the memories about a topic and put them into the conversation as context."""
        r = await run(lambda app: app.recall(topic, k=8, mode="hybrid"))
        return [UserMessage(render_recall(topic, r))]
