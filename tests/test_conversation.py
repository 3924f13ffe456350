"""The prompt's history window: everything while it fits, then trimmed in steps so that the
prompt's beginning (what the LLM has cached) stays the same for several turns."""

from __future__ import annotations

from server.config import SessionConfig
from server.conversation import Conversation, retention, text_item
from server.session import RealtimeSession
from tests.test_protocol import Driver


def say(conversation: Conversation, number: int, text: str) -> None:
    conversation.add(text_item(f"u{number}", "user", text))
    conversation.add(text_item(f"a{number}", "assistant", text.upper()))


def test_the_whole_history_while_it_fits():
    conversation = Conversation(history_chars=1000)
    for number in range(3):
        say(conversation, number, f"turn {number} " + "x" * 40)
    messages = conversation.messages("be brief")
    assert [m.role for m in messages] == ["system", "user", "assistant"] * 1 + ["user", "assistant"] * 2
    assert messages[1].content.startswith("turn 0")


def test_past_the_budget_the_oldest_go_in_one_step_and_the_start_then_stays():
    conversation = Conversation(history_chars=1000)
    starts = []
    for number in range(30):
        say(conversation, number, f"turn {number} " + "x" * 90)  # about 200 characters a turn
        messages = conversation.messages("be brief", pending_user="next")
        assert sum(len(m.content) for m in messages[1:-1]) <= 1000
        assert messages[-1].content == "next"
        starts.append(messages[1].content.split()[1])
    changes = sum(1 for before, after in zip(starts, starts[1:], strict=False) if before != after)
    assert changes <= 10  # a window sliding every turn would change its start 25 times
    assert starts[-1] != "0"


def test_the_latest_item_is_kept_even_when_it_alone_is_over_the_budget():
    conversation = Conversation(history_chars=100)
    say(conversation, 0, "short")
    conversation.add(text_item("u1", "user", "y" * 500))
    messages = conversation.messages("be brief")
    assert messages[-1].content == "y" * 500


def test_a_deleted_window_start_does_not_lose_the_history():
    conversation = Conversation(history_chars=1000)
    for number in range(10):
        say(conversation, number, f"turn {number} " + "x" * 90)
    first = conversation.messages("be brief")[1].content
    start_id = next(item.id for item in conversation.items if item.text == first)
    conversation.delete(start_id)
    messages = conversation.messages("be brief")
    assert len(messages) > 2 and sum(len(m.content) for m in messages[1:]) <= 1000


def history_size(conversation: Conversation) -> int:
    return sum(len(m.content) for m in conversation.messages("be brief")[1:])


def test_truncation_disabled_keeps_everything_and_a_retention_ratio_sets_what_is_kept():
    kept = {}
    for setting in ("auto", {"type": "retention_ratio", "retention_ratio": 0.8}, "disabled"):
        conversation = Conversation(history_chars=1000)
        conversation.retention = retention(setting)
        for number in range(6):  # about 1200 characters: one past the budget
            say(conversation, number, f"turn {number} " + "x" * 90)
        kept[str(setting)] = history_size(conversation)
    assert kept["disabled"] > 1000 and 500 < kept[str({"type": "retention_ratio", "retention_ratio": 0.8})] <= 800
    assert kept["auto"] <= 500


def test_a_session_takes_the_truncation_setting_and_echoes_it(silero):
    driver = Driver(RealtimeSession(SessionConfig(), silero))
    assert driver.of("session.created")[0]["session"]["truncation"] == "auto"
    ratio = {"type": "retention_ratio", "retention_ratio": 0.25}
    driver.send({"type": "session.update", "session": {"truncation": ratio}})
    assert driver.of("session.updated")[-1]["session"]["truncation"] == ratio
    assert driver.session.conversation.retention == 0.25
    driver.send({"type": "session.update", "session": {"truncation": "disabled"}})
    assert driver.session.conversation.retention is None
    driver.send({"type": "session.update", "event_id": "bad", "session": {
        "truncation": {"type": "retention_ratio", "retention_ratio": 2}}})
    assert driver.of("error")[-1]["error"]["event_id"] == "bad"
    assert driver.session.conversation.retention is None  # nothing changed
