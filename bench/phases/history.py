"""Line 9: the workflow history one turn adds, early and late in one session's life: a session lives for weeks, so
a turn must cost its history the same at turn 200 as at turn 1 (the replies' text stays out of it)."""

from temporalio.client import WorkflowHistory

from bench.load import Load
from bench.procs import log
from bench.project import workflow_id_for
from bench.results import Config


def size(history: WorkflowHistory) -> int:
    """The history's bytes as the server stores and sends them (its events' protobuf sizes)."""
    return sum(event.ByteSize() for event in history.events)


async def per_turn(load: Load, config: Config) -> None:
    """One session, config.history_turns turns one after another; the bytes of turn 1, of a turn a quarter of the
    way and of the last, each read from the history before and after it, alone."""
    session_id, f = await load.start("api"), load.results.figures
    handle = load.client.get_workflow_handle(workflow_id_for(session_id))
    url = f"/api/sessions/{session_id}/messages/?wait=true"

    async def settled_size() -> int:
        await load.quiesce()  # the turn's last workflow task done, not only its reply stored
        return size(await handle.fetch_history())

    async def measured(content: str) -> tuple[int, int]:
        nonlocal turn
        while True:
            before = await settled_size()
            turn += 1
            await load.post("api", url, {"content": content.format(turn=turn)}, 201)
            if (after := await settled_size()) > before:  # else the run continued as new: measure the next turn
                return after - before, turn

    turn = 0
    marks = sorted({1, max(2, config.history_turns // 4), config.history_turns})
    for mark in marks:
        while turn < mark - 1:  # the turns in between, posted as fast as they are taken; the last waits for its reply
            turn += 1
            path = url if turn == mark - 1 else url.removesuffix("?wait=true")
            await load.post("api", path, {"content": f"question {turn}"}, 201)
        f[f"history_{mark}"], f[f"history_{mark}_turn"] = await measured("question {turn}")
        # A turn with one tool call (the demo model searches when asked to): its model steps and the call's activity
        # carry ids and names only, so it too must cost the same late as early.
        f[f"history_tool_{mark}"], _ = await measured("search my chats for question {turn}")
    f["history_turns"] = turn
    sizes = ", ".join(f"turn {f[f'history_{m}_turn']:.0f}: {f[f'history_{m}']:.0f} B" for m in marks)
    tool_sizes = ", ".join(f"{f[f'history_tool_{m}']:.0f} B" for m in marks)
    log(f"history per turn: {sizes}; a turn with a tool call beside each: {tool_sizes}")
