"""The tic-tac-toe page (/game): two people play a game to a win, on two gateways."""

from __future__ import annotations

import secrets

from playwright.sync_api import Page, expect

from tests.browser.helpers import OpenPage, screenshot
from tests.support.cluster import Cluster


def play(page: Page, cell: int) -> None:
    button = page.locator(f"#board [data-cell='{cell}']")
    expect(button).to_be_enabled()
    button.click()
    expect(button).not_to_have_text("")


def test_two_players_play_tic_tac_toe_to_a_win(
    web_cluster: Cluster, open_page: OpenPage
) -> None:
    game_id = "table-" + secrets.token_hex(3)
    x = open_page(f"{web_cluster.url(0)}/game?id={game_id}").page
    expect(x.locator("#role")).to_have_text("You play X.")
    expect(x.locator("#turn")).to_have_text("Waiting for an opponent…")
    expect(x.locator("#board .cell").first).to_be_disabled()

    # The second player joins by typing the id (the first came by the shared link).
    o = open_page(f"{web_cluster.url(1)}/game").page
    o.fill("#game-id", game_id)
    o.click("#join")
    expect(o.locator("#role")).to_have_text("You play O.")
    expect(x.locator("#turn")).to_have_text("Your turn (X)")
    expect(o.locator("#turn")).to_have_text("X to move")
    expect(o.locator("#board .cell").first).to_be_disabled()  # not O's turn

    play(x, 4)
    expect(o.locator("#board [data-cell='4']")).to_have_text("X")
    play(o, 0)
    play(x, 2)
    play(o, 8)
    expect(x.locator("#board [data-cell='8']")).to_have_text("O")
    play(x, 6)  # 2-4-6: the anti-diagonal

    expect(x.locator("#turn")).to_have_text("You win! (X)")
    expect(o.locator("#turn")).to_have_text("X wins — you lose")
    for page in (x, o):
        expect(page.locator("#board .cell.win")).to_have_count(3)
        for cell in (2, 4, 6):
            expect(page.locator(f"#board [data-cell='{cell}']")).to_have_class("cell x win")
        expect(page.locator("#board .cell:enabled")).to_have_count(0)
        expect(page.locator("#rematch")).to_be_visible()
    screenshot(x, "game-won")
    screenshot(o, "game-lost")

    # Rematch: seats swap, so O (now X) starts the next round.
    o.click("#rematch")
    expect(o.locator("#turn")).to_have_text("Your turn (X)")
    expect(x.locator("#turn")).to_have_text("X to move")
    expect(x.locator("#role")).to_have_text("You play O.")
    expect(x.locator("#board .cell.win")).to_have_count(0)
