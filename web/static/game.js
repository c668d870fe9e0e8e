/* Tic-tac-toe on namespace "/game": `join game` gameId → ack {success, gameId, role, state};
 * `game action` {gameId, action: "move", cell} / {gameId, action: "rematch"};
 * `game update` state {gameId, board[9], turn, players{X,O}, winner, draw, line, moveCount,
 * status}. Anonymous play is allowed; a chat sign-in (stored token) is used when present. */
"use strict";

(function () {
  const { el, $, request } = window.SB;

  const ui = {
    me: $("#me"), status: $("#status"), reconnect: $("#reconnect"), error: $("#error"),
    joinForm: $("#join-form"), gameId: $("#game-id"), share: $("#share"),
    shareLink: $("#share-link"), role: $("#role"), log: $("#log"), turn: $("#turn"),
    playerX: $("#player-x"), playerO: $("#player-o"), board: $("#board"), rematch: $("#rematch"),
  };

  const state = {
    socket: null,
    claims: null,
    everConnected: false,
    gameId: null,
    role: null, // "X" | "O" | "spectator"
    game: null, // the last state
  };

  SB.wireErrorBox(ui.error);
  const showError = (message) => SB.showError(ui.error, message);

  function setStatus(kind, text) {
    SB.setStatus(ui.status, kind, text);
    ui.reconnect.hidden = kind !== "disconnected";
  }

  function log(text) {
    ui.log.prepend(el("li", {}, el("time", { text: SB.timeOf() + " " }), text));
    while (ui.log.children.length > 30) ui.log.lastChild.remove();
  }

  // -- board ---------------------------------------------------------------------------------
  const cells = [];
  for (let i = 0; i < 9; i += 1) {
    const cell = el("button", {
      className: "cell",
      attrs: { type: "button", disabled: true, "aria-label": cellLabel(i, null) },
      dataset: { cell: String(i) },
      onClick: () => move(i),
    });
    cells.push(cell);
    ui.board.append(cell);
  }

  function cellLabel(i, mark) {
    return "Row " + (Math.floor(i / 3) + 1) + ", column " + ((i % 3) + 1) + ": " + (mark || "empty");
  }

  function myPlayerId() {
    return (state.claims && state.claims.userId) || (state.socket && state.socket.id) || null;
  }

  function render() {
    const game = state.game;
    const line = new Set(game ? game.line || [] : []);
    const myTurn = Boolean(game && game.status === "playing" && game.turn === state.role);
    for (let i = 0; i < 9; i += 1) {
      const mark = game ? game.board[i] : null;
      const cell = cells[i];
      cell.textContent = mark || "";
      cell.className = "cell" + (mark ? " " + mark.toLowerCase() : "") + (line.has(i) ? " win" : "");
      cell.disabled = !myTurn || Boolean(mark);
      cell.setAttribute("aria-label", cellLabel(i, mark));
    }
    ui.turn.textContent = turnText(game);
    const players = (game && game.players) || {};
    const me = myPlayerId();
    ui.playerX.textContent = "X: " + seatName(players.X, me);
    ui.playerO.textContent = "O: " + seatName(players.O, me);
    ui.playerX.className = players.X && players.X === me ? "you" : "";
    ui.playerO.className = players.O && players.O === me ? "you" : "";
    const over = Boolean(game && (game.status === "won" || game.status === "draw"));
    ui.rematch.hidden = !(over && (state.role === "X" || state.role === "O"));
    ui.role.textContent = state.gameId
      ? (state.role === "spectator" ? "You are watching this game." : "You play " + state.role + ".")
      : "";
  }

  function seatName(player, me) {
    if (!player) return "open seat";
    return player === me ? "you" : "opponent";
  }

  function turnText(game) {
    if (!game) return "Join a game to play";
    if (game.status === "won") {
      if (state.role === game.winner) return "You win! (" + game.winner + ")";
      if (state.role === "spectator") return game.winner + " wins";
      return game.winner + " wins — you lose";
    }
    if (game.status === "draw") return "Draw";
    if (game.status === "waiting") return "Waiting for an opponent…";
    if (game.turn === state.role) return "Your turn (" + game.turn + ")";
    return game.turn + " to move";
  }

  function apply(game) {
    if (!game || game.gameId !== state.gameId) return;
    const before = state.game;
    state.game = game;
    if (before && before.status !== game.status) {
      if (game.status === "won") log(game.winner + " wins.");
      else if (game.status === "draw") log("Draw.");
      else if (game.status === "playing" && before.status !== "playing") log("Game on: X moves first.");
      else if (game.status === "waiting") log("A seat is open; waiting for a player.");
    }
    if (before && game.moveCount === 0 && before.moveCount > 0) {
      state.role = roleOf(game);
      log("Rematch: seats swapped, you play " + state.role + ".");
    }
    render();
  }

  function roleOf(game) {
    const me = myPlayerId();
    if (game.players.X === me) return "X";
    if (game.players.O === me) return "O";
    return "spectator";
  }

  // -- actions -------------------------------------------------------------------------------
  async function join(gameId) {
    const res = await request(state.socket, "join game", gameId);
    if (!res.success) {
      showError("Could not join: " + res.error);
      return;
    }
    SB.hideError(ui.error);
    const fresh = state.gameId !== res.gameId;
    state.gameId = res.gameId;
    state.role = res.role;
    if (fresh) state.game = null;
    apply(res.state);
    if (!state.game) {
      state.game = res.state;
      render();
    }
    log(fresh ? "Joined game " + res.gameId + " as " + res.role + "." : "Back in game " + res.gameId + " as " + res.role + ".");
    const url = new URL(window.location.href);
    url.searchParams.set("id", res.gameId);
    window.history.replaceState(null, "", url.pathname + url.search);
    ui.shareLink.textContent = url.href;
    ui.shareLink.href = url.pathname + url.search;
    ui.share.hidden = false;
  }

  async function move(cell) {
    if (!state.gameId) return;
    const res = await request(state.socket, "game action", { gameId: state.gameId, action: "move", cell });
    if (!res.success) {
      showError(res.error);
      return;
    }
    SB.hideError(ui.error);
    apply(res.state);
  }

  ui.rematch.addEventListener("click", async () => {
    const res = await request(state.socket, "game action", { gameId: state.gameId, action: "rematch" });
    if (!res.success) showError(res.error);
    else apply(res.state);
  });

  ui.joinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const gameId = ui.gameId.value.trim();
    if (gameId) join(gameId);
  });

  // -- connection ----------------------------------------------------------------------------
  function boot() {
    const offered = SB.tokenFromPage();
    if (offered) SB.storeToken(offered);
    const token = SB.storedToken();
    const claims = SB.decodeToken(token);
    const usable = token && !SB.tokenExpired(claims);
    state.claims = usable ? claims : null;
    ui.me.textContent = usable ? claims.username : "guest";
    ui.me.title = usable ? "Signed in (from the chat page)" : "Playing anonymously";
    const fromUrl = new URL(window.location.href).searchParams.get("id");
    ui.gameId.value = fromUrl || "table-" + Math.random().toString(16).slice(2, 6);
    render();
    let socket;
    try {
      socket = SB.connect("/game", usable ? token : null);
    } catch (err) {
      setStatus("disconnected", "disconnected");
      showError(err.message);
      return;
    }
    state.socket = socket;

    socket.on("connect", async () => {
      const again = state.everConnected;
      state.everConnected = true;
      setStatus("connected", again ? "reconnected" : "connected");
      if (again) log("Reconnected.");
      if (state.gameId) await join(state.gameId);
      else if (fromUrl) await join(fromUrl);
    });
    socket.on("disconnect", (reason) => {
      if (reason === "io server disconnect") {
        setStatus("disconnected", "disconnected");
        showError("The server closed the connection.");
      } else if (reason !== "io client disconnect") {
        setStatus("reconnecting", "reconnecting…");
      }
      for (const cell of cells) cell.disabled = true;
    });
    socket.io.on("reconnect_attempt", () => setStatus("reconnecting", "reconnecting…"));
    socket.on("connect_error", (err) => {
      if (socket.active) {
        setStatus("reconnecting", "reconnecting…");
        return;
      }
      setStatus("disconnected", "disconnected");
      showError((err && err.message) || "connection refused");
    });
    socket.on("game update", apply);
    socket.on("player joined", (data) => {
      if (data && data.gameId === state.gameId) log("A player joined.");
    });
    socket.on("player disconnected", (sid) => {
      const players = state.game && state.game.players;
      if (players && (players.X === sid || players.O === sid) && sid !== myPlayerId()) {
        log("Your opponent left; the seat is open.");
      }
    });
    socket.on("error", (data) => {
      if (data && data.message) showError(data.message);
    });
  }

  ui.reconnect.addEventListener("click", () => {
    if (state.socket) {
      setStatus("connecting", "connecting…");
      state.socket.connect();
    }
  });

  boot();
})();
