"""The prompt's history window: everything while it fits, then trimmed in steps so that the
prompt's beginning (what the LLM has cached) stays the same for several turns."""

from __future__ import annotations

from server.conversation import Conversation, text_item


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
