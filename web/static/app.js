/* The chat page: namespace "/" of the switchboard contract (../../shared/EVENTS.md).
 * User text is always rendered with textContent (SB.el), never as HTML. */
"use strict";

(function () {
  const { el, $, request } = window.SB;
  const ROOM_POLL_MS = 5000;
  const HISTORY_LIMIT = 50;

  const ui = {
    signin: $("#signin"), app: $("#app"), guestForm: $("#guest-form"), guestName: $("#guest-name"),
    tokenForm: $("#token-form"), tokenInput: $("#token-input"), me: $("#me"),
    status: $("#status"), reconnect: $("#reconnect"), signout: $("#signout"), error: $("#error"),
    rooms: $("#rooms"), noRooms: $("#no-rooms"), refreshRooms: $("#refresh-rooms"),
    createForm: $("#create-form"), createId: $("#create-id"), createName: $("#create-name"),
    createMax: $("#create-max"), createPrivate: $("#create-private"),
    createPassword: $("#create-password"), createPasswordLabel: $("#create-password-label"),
    privateForm: $("#private-form"), privateId: $("#private-id"),
    privatePassword: $("#private-password"),
    roomTitle: $("#room-title"), roomCount: $("#room-count"), leave: $("#leave-room"),
    messages: $("#messages"), messageForm: $("#message-form"), messageInput: $("#message-input"),
    send: $("#send"), users: $("#users"), usersCount: $("#users-count"), pms: $("#pms"),
    pmForm: $("#pm-form"), pmLabel: $("#pm-label"), pmInput: $("#pm-input"), pmSend: $("#pm-send"),
  };

  const state = {
    token: null,
    me: null, // {userId, username, role}
    socket: null,
    everConnected: false,
    serverId: "",
    removed: null, // why the server disconnected us (kicked/banned), if it did
    room: null, // {id, name, password, maxUsers, isPrivate}
    lastJoin: null, // the room id of the latest join request (for `room error` texts)
    mySockets: new Set(), // every socket id this page has had (notices about them are ours)
    rendered: new Set(), // message ids in the log (history and live may overlap)
    rooms: [],
    names: new Map(), // userId -> username (for private messages)
    users: [],
    pmTo: null, // {id, username}
    roomTimer: null,
    usersTimer: null,
  };

  // -- errors and status ---------------------------------------------------------------------
  SB.wireErrorBox(ui.error);
  const showError = (message) => SB.showError(ui.error, message);

  function setStatus(kind, text) {
    SB.setStatus(ui.status, kind, text);
    ui.reconnect.hidden = kind !== "disconnected";
  }

  // -- sign-in -------------------------------------------------------------------------------
  async function boot() {
    const offered = SB.tokenFromPage();
    if (offered) SB.storeToken(offered);
    const token = SB.storedToken();
    const claims = SB.decodeToken(token);
    if (token && !SB.tokenExpired(claims)) {
      start(token, claims);
    } else {
      if (token) SB.storeToken(null);
      showSignin(token ? "Your session has expired; sign in again." : null);
    }
  }

  async function showSignin(message) {
    ui.app.hidden = true;
    ui.signin.hidden = false;
    ui.me.hidden = true;
    ui.signout.hidden = true;
    setStatus("offline", "offline");
    if (message) showError(message);
    const demo = await SB.demoMode();
    ui.guestForm.hidden = !demo;
    (demo ? ui.guestName : ui.tokenInput).focus();
  }

  ui.guestForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = ui.guestName.value.trim();
    if (!name) return;
    const button = $("button", ui.guestForm);
    button.disabled = true;
    try {
      const issued = await SB.guestToken(name);
      SB.storeToken(issued.token);
      SB.hideError(ui.error);
      start(issued.token, SB.decodeToken(issued.token));
    } catch (err) {
      showError(err.message);
    } finally {
      button.disabled = false;
    }
  });

  ui.tokenForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = ui.tokenInput.value.trim();
    const claims = SB.decodeToken(token);
    if (!claims) {
      showError("That is not a token (a JWT has three parts separated by dots).");
      return;
    }
    if (SB.tokenExpired(claims)) {
      showError("That token has expired.");
      return;
    }
    SB.storeToken(token);
    SB.hideError(ui.error);
    ui.tokenInput.value = "";
    start(token, claims);
  });

  ui.signout.addEventListener("click", () => signOut());

  function signOut(message) {
    stop();
    SB.storeToken(null);
    state.room = null;
    showSignin(message);
  }

  // -- connection ----------------------------------------------------------------------------
  function start(token, claims) {
    stop();
    state.token = token;
    state.me = claims;
    state.names.set(claims.userId, claims.username);
    state.everConnected = false;
    state.removed = null;
    ui.signin.hidden = true;
    ui.app.hidden = false;
    ui.me.hidden = false;
    ui.me.textContent = claims.username;
    ui.me.title = "Signed in as " + claims.username + " (" + claims.userId + ")";
    ui.signout.hidden = false;
    showRoom();
    setStatus("connecting", "connecting…");
    let socket;
    try {
      socket = SB.connect("/", token);
    } catch (err) {
      setStatus("disconnected", "disconnected");
      showError(err.message);
      return;
    }
    state.socket = socket;
    wire(socket);
    state.roomTimer = window.setInterval(() => {
      if (!document.hidden) loadRooms();
    }, ROOM_POLL_MS);
  }

  function stop() {
    window.clearInterval(state.roomTimer);
    window.clearTimeout(state.usersTimer);
    if (state.socket) {
      state.socket.removeAllListeners();
      state.socket.io.removeAllListeners();
      state.socket.disconnect();
    }
    state.socket = null;
  }

  ui.reconnect.addEventListener("click", () => {
    if (!state.socket) return;
    state.removed = null;
    SB.hideError(ui.error);
    setStatus("connecting", "connecting…");
    state.socket.connect();
  });

  function wire(socket) {
    socket.on("connect", async () => {
      const again = state.everConnected;
      state.everConnected = true;
      state.removed = null;
      state.mySockets.add(socket.id);
      setStatus("connected", again ? "reconnected" : "connected");
      ui.status.title = state.serverId ? "via gateway " + state.serverId : "";
      if (again) notice("Reconnected to the server.", "info");
      loadUsers();
      await loadRooms();
      if (state.room) await rejoin();
    });

    socket.on("disconnect", (reason) => {
      if (reason === "io client disconnect") return;
      if (reason === "io server disconnect") {
        // The server removed this socket (kicked, banned): socket.io does not retry by itself.
        setStatus("disconnected", "disconnected");
        showError(state.removed || "The server closed the connection.");
      } else {
        setStatus("reconnecting", "reconnecting…");
      }
      setComposer(false);
    });

    socket.io.on("reconnect_attempt", (attempt) => {
      setStatus("reconnecting", attempt > 1 ? "reconnecting… (try " + attempt + ")" : "reconnecting…");
    });

    socket.on("connect_error", (err) => {
      if (socket.active) {
        setStatus("reconnecting", "reconnecting…");
        return;
      }
      // Refused by the server: a bad token, a ban, or too many connections.
      const message = (err && err.message) || "connection refused";
      if (/^Authentication error/.test(message)) {
        signOut(message + ". Sign in again.");
        return;
      }
      setStatus("disconnected", "disconnected");
      showError(message === "Banned" ? "You are banned from this chat." : message);
    });

    socket.on("welcome", (data) => {
      state.serverId = (data && data.serverId) || "";
      ui.status.title = state.serverId ? "via gateway " + state.serverId : "";
    });

    socket.on("user online", scheduleUsers);
    socket.on("user offline", scheduleUsers);

    socket.on("room joined", (data) => {
      if (!state.room || !data || data.roomId !== state.room.id) return;
      state.room.name = data.roomName || state.room.id;
      showRoom(data.userCount);
    });

    socket.on("user joined", (data) => {
      if (!state.room || !data || data.roomId !== state.room.id) return;
      if (!state.mySockets.has(data.socketId)) {
        notice((data.username || "Someone") + " joined the room.", "join");
      }
      showRoom(data.userCount);
      loadRooms();
    });

    socket.on("user left", (data) => {
      if (!state.room || !data || data.roomId !== state.room.id) return;
      // Our own socket from before a reconnect, dropped late by the server: not news.
      if (!state.mySockets.has(data.socketId)) {
        notice((data.username || "Someone") + " left the room.", "leave");
      }
      showRoom(data.userCount);
      loadRooms();
    });

    socket.on("chat message", (msg) => {
      if (!msg) return;
      if (msg.roomId && (!state.room || msg.roomId !== state.room.id)) return;
      addMessage(msg, { everyone: !msg.roomId });
    });

    socket.on("room message", (msg) => {
      if (!msg || !state.room || msg.roomId !== state.room.id) return;
      addMessage({ from: msg.from, username: msg.username, content: msg.message,
        timestamp: msg.timestamp });
    });

    socket.on("private message", (msg) => {
      if (!msg) return;
      const fromName = state.names.get(msg.from) || msg.from;
      addPrivate(fromName + " → you", msg.content, msg.timestamp, false);
    });

    socket.on("system message", (msg) => {
      if (!msg) return;
      notice("Announcement: " + (msg.content || ""), "announcement", msg.timestamp);
    });

    socket.on("kicked", (data) => {
      state.removed = "You were removed from the chat: " + ((data && data.reason) || "kicked");
      notice(state.removed, "alert");
    });

    socket.on("banned", (data) => {
      state.removed = "You are banned: " + ((data && data.reason) || "no reason given");
      notice(state.removed, "alert");
    });

    socket.on("server shutdown", () => {
      notice("The server is restarting; reconnecting…", "info");
    });

    socket.on("error", (data) => {
      if (data && data.message) showError(data.message);
    });

    socket.on("room error", (data) => {
      // Comes with the failed ack of a join (same text): phrase it the same way.
      if (data && data.message) showError(refusalText(state.lastJoin || "", data.message));
    });
  }

  // -- rooms ---------------------------------------------------------------------------------
  async function loadRooms() {
    const res = await request(state.socket, "get rooms");
    if (!res.success || !Array.isArray(res.rooms)) return;
    state.rooms = res.rooms;
    renderRooms();
  }

  function renderRooms() {
    SB.clear(ui.rooms);
    for (const room of state.rooms) {
      const current = state.room && state.room.id === room.id;
      const button = el("button", {
        className: "room",
        attrs: { type: "button", "aria-current": current ? "true" : false,
          "aria-label": "Join room " + room.name + ", " + room.userCount + " of " + room.maxUsers + " users" },
        onClick: () => joinRoom(room.id, undefined, room),
      },
      el("span", { className: "room-name", text: room.name }),
      el("span", { className: "room-count", text: room.userCount + "/" + room.maxUsers }));
      ui.rooms.append(el("li", { dataset: { roomId: room.id } }, button));
    }
    ui.noRooms.hidden = state.rooms.length > 0;
  }

  ui.refreshRooms.addEventListener("click", () => loadRooms());

  ui.createPrivate.addEventListener("change", () => {
    const on = ui.createPrivate.checked;
    ui.createPassword.hidden = !on;
    ui.createPasswordLabel.hidden = !on;
    ui.createPassword.required = on;
  });

  ui.createForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const roomId = ui.createId.value.trim();
    const spec = {
      roomId,
      roomName: ui.createName.value.trim() || roomId,
      maxUsers: Number(ui.createMax.value) || 100,
      isPrivate: ui.createPrivate.checked,
    };
    if (spec.isPrivate) spec.password = ui.createPassword.value;
    const res = await request(state.socket, "create room", spec);
    if (!res.success) {
      showError("Could not create the room: " + res.error);
      return;
    }
    ui.createForm.reset();
    ui.createPrivate.dispatchEvent(new Event("change"));
    await joinRoom(roomId, spec.password, { name: spec.roomName, maxUsers: spec.maxUsers,
      isPrivate: spec.isPrivate });
  });

  ui.privateForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const ok = await joinRoom(ui.privateId.value.trim(), ui.privatePassword.value,
      { isPrivate: true });
    if (ok) ui.privateForm.reset();
  });

  ui.leave.addEventListener("click", async () => {
    if (!state.room) return;
    const roomId = state.room.id;
    state.room = null;
    showRoom();
    clearLog();
    await request(state.socket, "leave room", roomId);
    loadRooms();
  });

  /** Join `roomId` (leaving the current room first); false when the server refused. */
  async function joinRoom(roomId, password, known) {
    if (!roomId) return false;
    if (state.room && state.room.id === roomId) return true;
    state.lastJoin = roomId;
    const payload = password ? { roomId, password } : { roomId };
    const res = await request(state.socket, "join room", payload);
    if (!res.success) {
      showError(refusalText(roomId, res.error));
      return false;
    }
    const previous = state.room;
    if (previous) request(state.socket, "leave room", previous.id);
    const info = known || {};
    state.room = { id: roomId, name: info.name || roomId, password,
      maxUsers: info.maxUsers || 100, isPrivate: Boolean(info.isPrivate || password) };
    SB.hideError(ui.error);
    clearLog();
    showRoom();
    await loadHistory();
    loadRooms();
    ui.messageInput.focus();
    return true;
  }

  function refusalText(roomId, error) {
    const reasons = {
      "room not found": "There is no room \u201c" + roomId + "\u201d.",
      "wrong password": "Wrong password for room \u201c" + roomId + "\u201d.",
      "room is full": "Room \u201c" + roomId + "\u201d is full.",
    };
    return reasons[error] || "Could not join \u201c" + roomId + "\u201d: " + error;
  }

  /** After a reconnect: back into the room we were in. A room that emptied while we were away
   *  was deleted by the server; it is created again with the settings we know. */
  async function rejoin() {
    const room = state.room;
    const payload = room.password ? { roomId: room.id, password: room.password } : { roomId: room.id };
    state.lastJoin = room.id;
    let res = await request(state.socket, "join room", payload);
    if (!res.success && res.error === "room not found") {
      const spec = { roomId: room.id, roomName: room.name, maxUsers: room.maxUsers,
        isPrivate: Boolean(room.isPrivate && room.password) };
      if (spec.isPrivate) spec.password = room.password;
      await request(state.socket, "create room", spec);
      res = await request(state.socket, "join room", payload);
    }
    if (!res.success) {
      state.room = null;
      showRoom();
      showError("Could not rejoin the room: " + res.error);
      return;
    }
    SB.hideError(ui.error);
    notice("Rejoined " + room.name + ".", "info");
    showRoom();
    await loadHistory();
    loadRooms();
  }

  function showRoom(count) {
    const room = state.room;
    ui.roomTitle.textContent = room ? room.name : "No room";
    ui.roomTitle.title = room ? "Room id: " + room.id : "";
    if (count !== undefined && room) room.count = count;
    ui.roomCount.textContent = room && room.count !== undefined
      ? room.count + (room.count === 1 ? " person" : " people") : "";
    ui.leave.hidden = !room;
    setComposer(Boolean(room && state.socket && state.socket.connected));
    renderRooms();
  }

  function setComposer(on) {
    ui.messageInput.disabled = !on;
    ui.send.disabled = !on;
    ui.messageInput.placeholder = !state.room ? "Join a room to chat"
      : on ? "Message " + state.room.name : "Offline…";
  }

  // -- messages ------------------------------------------------------------------------------
  async function loadHistory() {
    const room = state.room;
    const res = await request(state.socket, "get history", { roomId: room.id, limit: HISTORY_LIMIT });
    if (!res.success || state.room !== room) return;
    const live = Array.from(ui.messages.children);
    clearLog();
    for (const msg of res.messages || []) addMessage(msg);
    for (const node of live) {
      if (!node.dataset.id || !state.rendered.has(node.dataset.id)) {
        ui.messages.append(node);
        if (node.dataset.id) state.rendered.add(node.dataset.id);
      }
    }
    scrollDown();
  }

  function clearLog() {
    SB.clear(ui.messages);
    state.rendered.clear();
  }

  function addMessage(msg, opts) {
    const options = opts || {};
    if (msg.id) {
      if (state.rendered.has(msg.id)) return;
      state.rendered.add(msg.id);
    }
    if (msg.from && msg.username) state.names.set(msg.from, msg.username);
    const mine = state.me && msg.from === state.me.userId;
    const time = el("time", { text: SB.timeOf(msg.timestamp),
      attrs: { datetime: msg.timestamp || new Date().toISOString() } });
    const item = el("li", { className: "msg" + (mine ? " mine" : ""),
      dataset: msg.id ? { id: msg.id } : {} },
    el("div", { className: "meta" },
      el("span", { className: "author", text: msg.username || msg.from || "unknown" }),
      options.everyone ? el("span", { className: "tag", text: "to everyone" }) : null,
      time),
    el("p", { className: "body", text: msg.content }));
    ui.messages.append(item);
    scrollDown();
  }

  function notice(text, kind, timestamp) {
    ui.messages.append(el("li", { className: "notice " + (kind || "info") },
      el("span", { text }),
      el("time", { text: SB.timeOf(timestamp), attrs: { datetime: timestamp || new Date().toISOString() } })));
    scrollDown();
  }

  function scrollDown() {
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  ui.messageForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const content = ui.messageInput.value;
    if (!content.trim() || !state.room) return;
    ui.send.disabled = true;
    const res = await request(state.socket, "chat message", { content, roomId: state.room.id });
    ui.send.disabled = !(state.socket && state.socket.connected);
    if (!res.success) {
      showError(sendError(res.error));
      return;
    }
    ui.messageInput.value = "";
    addMessage({ id: res.messageId, from: state.me.userId, username: state.me.username,
      content: content.trim(), timestamp: new Date().toISOString() });
    ui.messageInput.focus();
  });

  function sendError(error) {
    if (error === "rate limit exceeded") return "You are sending too fast; wait a few seconds.";
    if (/^you are muted/.test(error)) return "Y" + error.slice(1) + "; your messages are not sent.";
    return "Message not sent: " + error;
  }

  // -- people and private messages -----------------------------------------------------------
  function scheduleUsers() {
    window.clearTimeout(state.usersTimer);
    state.usersTimer = window.setTimeout(loadUsers, 250);
  }

  async function loadUsers() {
    const res = await request(state.socket, "get online users");
    if (!res.success || !Array.isArray(res.users)) return;
    const byId = new Map();
    for (const user of res.users) {
      if (!byId.has(user.id)) byId.set(user.id, user);
      state.names.set(user.id, user.username);
    }
    state.users = Array.from(byId.values());
    renderUsers();
  }

  function renderUsers() {
    SB.clear(ui.users);
    for (const user of state.users) {
      const me = state.me && user.id === state.me.userId;
      const item = el("li", { className: me ? "me-row" : "" },
        el("span", { className: "dot", attrs: { "aria-hidden": "true" } }),
        el("span", { className: "name", text: user.username + (me ? " (you)" : "") }));
      if (!me) {
        item.append(el("button", {
          className: "small secondary", text: "Message",
          attrs: { type: "button", "aria-label": "Send a private message to " + user.username },
          onClick: () => pickRecipient(user),
        }));
      }
      ui.users.append(item);
    }
    ui.usersCount.textContent = String(state.users.length);
    if (state.pmTo && !state.users.some((u) => u.id === state.pmTo.id)) {
      ui.pmLabel.textContent = state.pmTo.username + " is offline";
    }
  }

  function pickRecipient(user) {
    state.pmTo = { id: user.id, username: user.username };
    ui.pmLabel.textContent = "To " + user.username;
    ui.pmInput.disabled = false;
    ui.pmSend.disabled = false;
    ui.pmInput.focus();
  }

  ui.pmForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const content = ui.pmInput.value;
    if (!content.trim() || !state.pmTo) return;
    const to = state.pmTo;
    const res = await request(state.socket, "private message", { to: to.id, content });
    if (!res.success) {
      showError(res.error === "user not online" ? to.username + " is not online."
        : sendError(res.error));
      return;
    }
    ui.pmInput.value = "";
    addPrivate("you → " + to.username, content.trim(), new Date().toISOString(), true);
  });

  function addPrivate(who, content, timestamp, mine) {
    ui.pms.append(el("li", { className: "pm" + (mine ? " mine" : "") },
      el("div", { className: "meta" },
        el("span", { className: "author", text: who }),
        el("time", { text: SB.timeOf(timestamp), attrs: { datetime: timestamp || "" } })),
      el("p", { className: "body", text: content })));
    ui.pms.scrollTop = ui.pms.scrollHeight;
  }

  boot();
})();
