"""Line 10: what a crashed worker costs. The project's worker holds a few sessions, one of them writing a reply, and
is SIGKILLed and started again at once; as soon as the new worker polls, each held session is sent a message (a 503
retried with the same client_message_id, as the API asks of clients). Timed: the restart (the kill to the new
worker polling), each answer from then, and the interrupted reply's store from the kill."""

import asyncio
import json
import statistics
import time

from bench.load import Load, post_until_taken
from bench.phases.first_token import Follower
from bench.procs import log
from bench.results import Config

HELD = 4  # sessions the worker holds when it dies, one of them writing a reply
# The model server echoes the question: a reply this long is still being written when the worker dies.
QUESTION = "please repeat " + " ".join(f"word{k}" for k in range(40))


async def worker_killed(load: Load, config: Config) -> None:
    f = load.results.figures
    restarts: list[float] = []
    answers: list[float] = []
    replies: list[float] = []
    retried: list[str] = []
    async with load.stream_client() as http:
        for _ in range(config.recoveries):
            ids = [await load.start("api", content="hello") for _ in range(HELD)]
            followers = [Follower(http, session_id) for session_id in ids]
            await asyncio.gather(*(asyncio.wait_for(follower.stored_event(2).wait(), 60) for follower in followers))
            writing = followers[0]
            url = f"/api/sessions/{writing.session_id}/messages/"
            reply = json.loads(await load.post("api", url, {"content": QUESTION}, 201))["reply_seq"]
            await asyncio.wait_for(writing.writing_event(reply).wait(), 60)
            killed = time.monotonic()
            worker = load.rig.restart_worker()
            load.processes["worker"] = worker
            await asyncio.to_thread(worker.wait_ready)
            ready = time.monotonic()
            restarts.append(ready - killed)

            async def answer(session_id: str, ready: float = ready) -> float:
                await post_until_taken(load, session_id, "still there?", retried)
                return time.monotonic() - ready

            answers += await asyncio.gather(*(answer(session_id) for session_id in ids))
            await asyncio.wait_for(writing.stored_event(reply).wait(), 60)
            replies.append(time.monotonic() - killed)
            for follower in followers:
                await follower.close()
    await load.drain()
    f["recovery_sessions"], f["recovery_503"] = len(answers), len(retried)
    f["recovery_answer_p50"], f["recovery_answer_max"] = statistics.median(answers), max(answers)
    f["recovery_restart"], f["recovery_reply"] = statistics.median(restarts), max(replies)
    log(
        f"recovery time after a worker SIGKILL: {len(answers)} held sessions answered {max(answers):.2f} s at most "
        f"after the restarted worker polled ({len(retried)} posts answered 503); the restart took "
        f"{f['recovery_restart']:.2f} s, the interrupted reply was stored {max(replies):.2f} s after the kill"
    )
