"""The turn pipeline: a Slack message in, the agent's reply streamed out.

``TurnOrchestrator`` receives a turn durably, queues it in its conversation (one run per
agent thread at a time, answered in order by whichever process holds the conversation's
lease) and delivers the reply; ``TurnAnswer`` is one turn being answered.
"""

from .answer import TurnAnswer, fields_of
from .orchestrator import TurnOrchestrator
from .ports import Approver, ToolRunner
from .reply import Caps, Outcome, Reply, ending_for, service_failure_line, wait_for_run

__all__ = [
    "Approver",
    "Caps",
    "Outcome",
    "Reply",
    "ToolRunner",
    "TurnAnswer",
    "TurnOrchestrator",
    "ending_for",
    "fields_of",
    "service_failure_line",
    "wait_for_run",
]
