"""The block's custody: undo lifts only a block this tool put on, never one a hand put on."""

from __future__ import annotations

from upgradectl.custody import BlockCustody


def test_a_block_this_run_takes_is_its_own_to_undo_until_released() -> None:
    custody = BlockCustody()
    assert not custody.undo_is_ours and custody.in_service

    custody.took()
    assert custody.undo_is_ours and not custody.in_service

    custody.released()
    assert custody.in_service


def test_a_node_found_blocked_by_hand_is_never_ours_to_unblock_even_after_our_block_step() -> None:
    custody = BlockCustody()
    custody.found_blocked()
    custody.took()  # the block step runs anyway: it is harmless on a blocked node

    assert not custody.undo_is_ours
    assert not custody.in_service  # it stays out of service, as it was found
    assert custody.as_data() == {"hand_blocked": True, "ours": False, "blocked": False}


def test_a_block_inherited_from_an_earlier_run_is_ours_unless_that_run_found_it_by_hand() -> None:
    ours, hands = BlockCustody(), BlockCustody()
    ours.inherited(hand_blocked=False)
    hands.inherited(hand_blocked=True)

    assert ours.undo_is_ours and not ours.in_service
    assert not hands.undo_is_ours and not hands.in_service


def test_taking_a_block_inherited_by_hand_keeps_it_the_hands() -> None:
    custody = BlockCustody()
    custody.inherited(hand_blocked=True)
    custody.took()

    assert not custody.undo_is_ours


def test_an_operator_asking_for_the_unblock_hands_a_hand_block_over() -> None:
    custody = BlockCustody()
    custody.inherited(hand_blocked=True)
    custody.handed_over()
    custody.released()

    assert custody.in_service
    assert not custody.ours  # still not this tool's block: recovery does not claim it
