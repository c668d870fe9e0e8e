/* The admin dashboard: namespace "/admin" (role admin) for `get stats`, `broadcast message`,
 * `kick user`, `ban user`, `mute user`; namespace "/" (same token) for the online users and
 * their socket ids; this gateway's /metrics for event and message rates (same origin). */
"use strict";

(function () {
  const { el, $, request } = window.SB;
  const TOKEN_KEY = "switchboard.adminToken";
  const POLL_MS = 2000;
  // Longer than the gateway's --request-timeout (5 s by default): a partial answer comes.
  const STATS_WAIT_MS = 8000;
  const USERS_MS = 10000;
  const SPAN_MS = 5 * 60 * 1000;
  const MESSAGE_EVENTS = new Set(["chat message", "private message", "room message"]);

  const ui = {
    me: $("#me"), status: $("#status"), reconnect: $("#reconnect"), signout: $("#signout"),
    error: $("#error"), signin: $("#signin"), tokenForm: $("#token-form"),
    tokenInput: $("#token-input"), dashboard: $("#dashboard"), updated: $("#updated"),
    partial: $("#partial"),
    total: $("#f-total"), main: $("#f-main"), chat: $("#f-chat"), game: $("#f-game"),
    admin: $("#f-admin"), events: $("#f-events"), messages: $("#f-messages"), chart: $("#chart"),
    chartSpan: $("#chart-span"),
    gateways: $("#gateways"), rooms: $("#rooms"), users: $("#users"),
    refreshUsers: $("#refresh-users"), log: $("#admin-log"),
    broadcastForm: $("#broadcast-form"), broadcastText: $("#broadcast-text"),
    kickForm: $("#kick-form"), kickSocket: $("#kick-socket"), kickReason: $("#kick-reason"),
    banForm: $("#ban-form"), banUser: $("#ban-user"), banReason: $("#ban-reason"),
    banSeconds: $("#ban-seconds"), muteForm: $("#mute-form"), muteUser: $("#mute-user"),
    muteSeconds: $("#mute-seconds"),
  };

  const state = {
    claims: null, admin: null, main: null, everConnected: false,
    pollTimer: null, usersTimer: null, usersDebounce: null, polling: false,
    lastMetrics: null, // {t, events, messages}
    series: [], // [{t, connections, messages}]
  };

  SB.wireErrorBox(ui.error);
  const showError = (message) => SB.showError(ui.error, message);

  function setStatus(kind, text) {
    SB.setStatus(ui.status, kind, text);
    ui.reconnect.hidden = kind !== "disconnected";
  }

  function result(ok, text) {
    ui.log.prepend(el("li", { className: ok ? "ok" : "fail" },
      el("time", { text: SB.timeOf() + " " }), text));
    while (ui.log.children.length > 50) ui.log.lastChild.remove();
  }

  // -- token ---------------------------------------------------------------------------------
  function loadToken() {
    try { return window.sessionStorage.getItem(TOKEN_KEY); } catch (_) { return null; }
  }

  function saveToken(token) {
    try {
      if (token) window.sessionStorage.setItem(TOKEN_KEY, token);
      else window.sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* lives as long as the page */ }
  }

  function boot() {
    const offered = SB.tokenFromPage();
    if (offered) saveToken(offered);
    const token = loadToken();
    if (token) tryStart(token);
    else showSignin();
  }

  function tryStart(token) {
    const claims = SB.decodeToken(token);
    if (!claims) return showSignin("That is not a token (a JWT has three parts separated by dots).");
    if (SB.tokenExpired(claims)) return showSignin("That token has expired.");
    if (claims.role !== "admin") {
      return showSignin("This token's role is \u201c" + claims.role + "\u201d; the dashboard needs role admin.");
    }
    saveToken(token);
    start(token, claims);
    return undefined;
  }

  function showSignin(message) {
    stop();
    saveToken(null);
    ui.dashboard.hidden = true;
    ui.signin.hidden = false;
    ui.me.hidden = true;
    ui.signout.hidden = true;
    setStatus("offline", "offline");
    if (message) showError(message);
    ui.tokenInput.focus();
  }

  ui.tokenForm.addEventListener("submit", (event) => {
    event.preventDefault();
    SB.hideError(ui.error);
    const token = ui.tokenInput.value.trim();
    ui.tokenInput.value = "";
    tryStart(token);
  });

  ui.signout.addEventListener("click", () => showSignin());

  // -- connection ----------------------------------------------------------------------------
  function start(token, claims) {
    stop();
    state.claims = claims;
    state.everConnected = false;
    ui.signin.hidden = true;
    ui.dashboard.hidden = false;
    ui.me.hidden = false;
    ui.me.textContent = claims.username + " (admin)";
    ui.signout.hidden = false;
    setStatus("connecting", "connecting…");
    try {
      state.admin = SB.connect("/admin", token);
      state.main = SB.connect("/", token);
    } catch (err) {
      setStatus("disconnected", "disconnected");
      showError(err.message);
      return;
    }
    wireAdmin(state.admin);
    wireMain(state.main);
    state.pollTimer = window.setInterval(poll, POLL_MS);
    state.usersTimer = window.setInterval(loadUsers, USERS_MS);
    window.addEventListener("resize", drawChart);
  }

  function stop() {
    window.clearInterval(state.pollTimer);
    window.clearInterval(state.usersTimer);
    for (const socket of [state.admin, state.main]) {
      if (!socket) continue;
      socket.removeAllListeners();
      socket.disconnect();
    }
    state.admin = state.main = null;
  }

  function wireAdmin(socket) {
    socket.on("connect", () => {
      const again = state.everConnected;
      state.everConnected = true;
      setStatus("connected", again ? "reconnected" : "connected");
      SB.hideError(ui.error);
      poll();
    });
    socket.on("disconnect", (reason) => {
      if (reason === "io client disconnect") return;
      if (reason === "io server disconnect") setStatus("disconnected", "disconnected");
      else setStatus("reconnecting", "reconnecting…");
    });
    socket.on("connect_error", (err) => {
      if (socket.active) {
        setStatus("reconnecting", "reconnecting…");
        return;
      }
      const message = (err && err.message) || "connection refused";
      if (/^Authentication error|^Access denied/.test(message)) {
        showSignin(message);
        return;
      }
      setStatus("disconnected", "disconnected");
      showError(message);
    });
    socket.on("error", (data) => {
      if (data && data.message) result(false, (data.event || "request") + ": " + data.message);
    });
  }

  function wireMain(socket) {
    socket.on("connect", loadUsers);
    socket.on("user online", scheduleUsers);
    socket.on("user offline", scheduleUsers);
    socket.on("system message", (msg) => {
      if (msg && msg.content) result(true, "Announcement delivered: " + msg.content);
    });
  }

  ui.reconnect.addEventListener("click", () => {
    for (const socket of [state.admin, state.main]) if (socket) socket.connect();
    setStatus("connecting", "connecting…");
  });

  // -- stats ---------------------------------------------------------------------------------
  async function poll() {
    // One at a time: a room instance that does not answer holds a poll for the gateway's
    // request timeout (5 s by default), after which the figures come, marked partial.
    if (state.polling) return;
    state.polling = true;
    try {
      await pollOnce();
    } finally {
      state.polling = false;
    }
  }

  async function pollOnce() {
    const [stats, rates] = await Promise.all([
      request(state.admin, "get stats", undefined, STATS_WAIT_MS),
      metricRates(),
    ]);
    const now = Date.now();
    if (stats.success) renderStats(stats);
    if (rates) {
      ui.events.textContent = rates.events.toFixed(1);
      ui.messages.textContent = rates.messages.toFixed(1);
    }
    if (stats.success || rates) {
      state.series.push({
        t: now,
        connections: stats.success ? stats.totalConnections : null,
        messages: rates ? rates.messages : null,
      });
      while (state.series.length && state.series[0].t < now - SPAN_MS) state.series.shift();
      ui.updated.textContent = "updated " + new Date(now).toLocaleTimeString();
      drawChart();
    }
  }

  /** Events and messages per second received by this gateway, from its /metrics counters. */
  async function metricRates() {
    let text;
    try {
      const response = await fetch("/metrics", { cache: "no-store" });
      if (!response.ok) return null;
      text = await response.text();
    } catch (_) {
      return null;
    }
    let events = 0;
    let messages = 0;
    const line = /^switchboard_gateway_events_received_total\{([^}]*)\}\s+([0-9.eE+-]+)\s*$/;
    for (const row of text.split("\n")) {
      const match = line.exec(row);
      if (!match) continue;
      const value = Number(match[2]);
      const labels = {};
      for (const pair of match[1].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
      events += value;
      if (MESSAGE_EVENTS.has(labels.event)) messages += value;
    }
    const now = performance.now();
    const last = state.lastMetrics;
    state.lastMetrics = { t: now, events, messages };
    if (!last || now - last.t < 200) return null;
    const dt = (now - last.t) / 1000;
    // A counter that went down means the gateway restarted: no rate for that interval.
    if (events < last.events || messages < last.messages) return null;
    return { events: (events - last.events) / dt, messages: (messages - last.messages) / dt };
  }

  function renderStats(stats) {
    // A room instance that did not answer in time: the figures lack its share, and say so.
    ui.partial.hidden = !stats.partial;
    ui.partial.textContent = stats.partial
      ? "Partial figures: no answer from " + (stats.missing || []).join(", ") + "."
      : "";
    ui.total.textContent = String(stats.totalConnections);
    ui.main.textContent = String(stats.mainConnections !== undefined ? stats.mainConnections
      : (stats.namespaces && stats.namespaces["/"]) || 0);
    ui.chat.textContent = String(stats.chatConnections);
    ui.game.textContent = String(stats.gameConnections);
    ui.admin.textContent = String(stats.adminConnections);

    SB.clear(ui.gateways);
    for (const gw of stats.gateways || []) {
      ui.gateways.append(el("tr", {},
        el("td", { className: "mono", text: gw.id }),
        el("td", { className: "num", text: gw.connections }),
        el("td", { className: "num", text: uptime(gw.uptime) })));
    }
    if (!(stats.gateways || []).length) ui.gateways.append(emptyRow(3, "no gateways"));

    SB.clear(ui.rooms);
    for (const room of stats.rooms || []) {
      ui.rooms.append(el("tr", {},
        el("td", { text: room.name }),
        el("td", { className: "mono", text: room.id }),
        el("td", { className: "num", text: room.userCount + "/" + room.maxUsers }),
        el("td", { text: room.isPrivate ? "private" : "public" })));
    }
    if (!(stats.rooms || []).length) ui.rooms.append(emptyRow(4, "no rooms"));
  }

  function emptyRow(span, text) {
    return el("tr", {}, el("td", { className: "empty", text, attrs: { colspan: span } }));
  }

  function uptime(seconds) {
    const s = Math.floor(Number(seconds) || 0);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const pad = (n) => String(n).padStart(2, "0");
    if (h) return h + "h " + pad(m) + "m";
    if (m) return m + "m " + pad(s % 60) + "s";
    return s + "s";
  }

  // -- chart (canvas, no library) ------------------------------------------------------------
  function drawChart() {
    const canvas = ui.chart;
    const dpr = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const css = getComputedStyle(document.documentElement);
    const colour = (name) => css.getPropertyValue(name).trim();
    const pad = { left: 40, right: 44, top: 12, bottom: 22 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const now = Date.now();
    // The window grows from one minute to SPAN_MS, so the first points are not a speck.
    const first = state.series.length ? state.series[0].t : now;
    const span = Math.min(SPAN_MS, Math.max(60000, now - first));
    const x = (t) => pad.left + ((t - (now - span)) / span) * plotW;
    const conns = state.series.map((p) => p.connections).filter((v) => v !== null);
    const rates = state.series.map((p) => p.messages).filter((v) => v !== null);
    const maxConn = Math.ceil(niceMax(Math.max(4, ...conns)) / 4) * 4; // whole-number ticks
    const maxRate = niceMax(Math.max(1, ...rates));

    ctx.font = "11px " + colour("--font");
    ctx.lineWidth = 1;
    ctx.strokeStyle = colour("--line");
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i += 1) {
      const y = pad.top + (plotH * i) / 4;
      ctx.beginPath();
      ctx.moveTo(pad.left, y);
      ctx.lineTo(pad.left + plotW, y);
      ctx.stroke();
      ctx.fillStyle = colour("--accent");
      ctx.textAlign = "right";
      ctx.fillText(formatTick(maxConn * (1 - i / 4)), pad.left - 6, y);
      ctx.fillStyle = colour("--ok");
      ctx.textAlign = "left";
      ctx.fillText(formatTick(maxRate * (1 - i / 4)), pad.left + plotW + 6, y);
    }
    ctx.fillStyle = colour("--muted");
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let k = 5; k >= 0; k -= 1) {
      const ago = (span * k) / 5;
      const label = !k ? "now" : span <= 120000 ? "-" + Math.round(ago / 1000) + "s"
        : "-" + Math.round((ago / 60000) * 10) / 10 + "m";
      ctx.fillText(label, x(now - ago), pad.top + plotH + 6);
    }
    ui.chartSpan.textContent = "last " + (span <= 120000 ? Math.round(span / 1000) + " seconds"
      : Math.round((span / 60000) * 10) / 10 + " minutes");
    plot(ctx, "connections", maxConn, colour("--accent"), x, pad, plotH);
    plot(ctx, "messages", maxRate, colour("--ok"), x, pad, plotH);

    const last = state.series[state.series.length - 1];
    canvas.setAttribute("aria-label", last
      ? "Chart of the " + ui.chartSpan.textContent + ": " + (last.connections ?? "unknown") + " connections now, "
        + (last.messages === null ? "unknown" : last.messages.toFixed(1)) + " messages per second"
      : "Chart of connections and message rate (no data yet)");
  }

  function plot(ctx, key, max, stroke, x, pad, plotH) {
    ctx.strokeStyle = stroke;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let drawing = false;
    for (const point of state.series) {
      const value = point[key];
      if (value === null) {
        drawing = false;
        continue;
      }
      const px = x(point.t);
      const py = pad.top + plotH - (value / max) * plotH;
      if (drawing) ctx.lineTo(px, py);
      else ctx.moveTo(px, py);
      drawing = true;
    }
    ctx.stroke();
  }

  function niceMax(value) {
    const exp = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * exp) return step * exp;
    return 10 * exp;
  }

  function formatTick(value) {
    return value >= 10 ? String(Math.round(value)) : String(Math.round(value * 100) / 100);
  }

  // -- users and actions ---------------------------------------------------------------------
  function scheduleUsers() {
    window.clearTimeout(state.usersDebounce);
    state.usersDebounce = window.setTimeout(loadUsers, 250);
  }

  async function loadUsers() {
    const [res, all] = await Promise.all([request(state.main, "get online users"),
                                          request(state.admin, "get sockets")]);
    if (!res.success || !Array.isArray(res.users)) return;
    // Each socket's transport (polling, or websocket once upgraded), from the cluster's list.
    const transports = new Map((all.success && Array.isArray(all.sockets) ? all.sockets : [])
      .map((s) => [s.socketId, s.transport || "?"]));
    SB.clear(ui.users);
    for (const user of res.users) {
      const me = state.claims && user.id === state.claims.userId;
      const actions = el("td", { className: "actions" });
      if (!me) {
        actions.append(
          el("button", { className: "small danger", text: "Kick",
            attrs: { type: "button", "aria-label": "Kick " + user.username + " (" + user.socketId + ")" },
            onClick: () => kick(user.socketId, "", user.username) }),
          el("button", { className: "small secondary", text: "Mute…",
            attrs: { type: "button", "aria-label": "Mute " + user.username },
            onClick: () => { ui.muteUser.value = user.id; ui.muteSeconds.focus(); } }),
          el("button", { className: "small secondary", text: "Ban…",
            attrs: { type: "button", "aria-label": "Ban " + user.username },
            onClick: () => { ui.banUser.value = user.id; ui.banReason.focus(); } }));
      }
      ui.users.append(el("tr", { dataset: { socketId: user.socketId, userId: user.id } },
        el("td", { text: user.username + (me ? " (you)" : "") }),
        el("td", { className: "mono", text: user.id }),
        el("td", { className: "mono", text: user.socketId }),
        el("td", { className: "transport", text: transports.get(user.socketId) || "?" }),
        actions));
    }
    if (!res.users.length) ui.users.append(emptyRow(5, "nobody online"));
  }

  ui.refreshUsers.addEventListener("click", loadUsers);

  async function kick(socketId, reason, who) {
    const payload = reason ? { socketId, reason } : { socketId };
    const res = await request(state.admin, "kick user", payload);
    result(res.success, res.success ? "Kicked " + (who || socketId) + "."
      : "Kick failed: " + res.error);
    if (res.success) scheduleUsers();
    return res.success;
  }

  ui.broadcastForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = ui.broadcastText.value.trim();
    if (!message) return;
    const res = await request(state.admin, "broadcast message", { message });
    result(res.success, res.success ? "Announcement sent." : "Broadcast failed: " + res.error);
    if (res.success) ui.broadcastText.value = "";
  });

  ui.kickForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (await kick(ui.kickSocket.value.trim(), ui.kickReason.value.trim())) ui.kickForm.reset();
  });

  ui.banForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const payload = { userId: ui.banUser.value.trim(), reason: ui.banReason.value.trim() };
    const seconds = Number(ui.banSeconds.value);
    if (ui.banSeconds.value && seconds > 0) payload.seconds = Math.round(seconds);
    const res = await request(state.admin, "ban user", payload);
    result(res.success, res.success
      ? "Banned " + payload.userId + (payload.seconds ? " for " + payload.seconds + " s." : " permanently.")
      : "Ban failed: " + res.error);
    if (res.success) {
      ui.banForm.reset();
      scheduleUsers();
    }
  });

  ui.muteForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const payload = { userId: ui.muteUser.value.trim(), seconds: Math.round(Number(ui.muteSeconds.value)) };
    const res = await request(state.admin, "mute user", payload);
    result(res.success, res.success ? "Muted " + payload.userId + " for " + payload.seconds + " s."
      : "Mute failed: " + res.error);
    if (res.success) ui.muteUser.value = "";
  });

  boot();
})();
