/* Helpers shared by the switchboard pages (chat, game, admin). No framework, no build step.
 *
 * Rule for every page: text that came from a user or the server is put into the DOM with
 * textContent (through el() below), never innerHTML, so it can never become markup. */
"use strict";

(function () {
  const TOKEN_KEY = "switchboard.token";

  /** el("li", {className: "msg", text: user.name, attrs: {"aria-label": "..."}}, child, ...) */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    const p = props || {};
    if (p.className) node.className = p.className;
    if (p.text !== undefined && p.text !== null) node.textContent = String(p.text);
    if (p.attrs) {
      for (const [name, value] of Object.entries(p.attrs)) {
        if (/^on/i.test(name) || name === "style") continue; // never from data
        if (value === false || value === null || value === undefined) continue;
        node.setAttribute(name, value === true ? "" : String(value));
      }
    }
    if (p.dataset) Object.assign(node.dataset, p.dataset);
    if (p.onClick) node.addEventListener("click", p.onClick);
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function $(selector, root) {
    return (root || document).querySelector(selector);
  }

  /** The claims of a JWT (not verified: the server does that), or null if it is not one. */
  function decodeToken(token) {
    if (typeof token !== "string") return null;
    const parts = token.trim().split(".");
    if (parts.length !== 3) return null;
    try {
      const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
      const padded = b64 + "===".slice((b64.length + 3) % 4);
      const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
      const claims = JSON.parse(new TextDecoder().decode(bytes));
      if (!claims || typeof claims !== "object") return null;
      return {
        userId: String(claims.userId || claims.sub || ""),
        username: String(claims.username || claims.userId || claims.sub || ""),
        role: String(claims.role || "user"),
        exp: typeof claims.exp === "number" ? claims.exp : null,
      };
    } catch (_) {
      return null;
    }
  }

  function tokenExpired(claims) {
    return !claims || (claims.exp !== null && claims.exp * 1000 <= Date.now());
  }

  /** A token handed over by the embedding site: ?token=… (removed from the address bar at once,
   *  so it is not bookmarked or shared) or a global window.SWITCHBOARD_TOKEN. */
  function tokenFromPage() {
    const url = new URL(window.location.href);
    const fromUrl = url.searchParams.get("token");
    if (fromUrl) {
      url.searchParams.delete("token");
      window.history.replaceState(null, "", url.pathname + url.search + url.hash);
      return fromUrl.trim();
    }
    if (typeof window.SWITCHBOARD_TOKEN === "string" && window.SWITCHBOARD_TOKEN) {
      return window.SWITCHBOARD_TOKEN.trim();
    }
    return null;
  }

  function storedToken(key) {
    try {
      return window.localStorage.getItem(key || TOKEN_KEY);
    } catch (_) {
      return null;
    }
  }

  function storeToken(token, key) {
    try {
      if (token) window.localStorage.setItem(key || TOKEN_KEY, token);
      else window.localStorage.removeItem(key || TOKEN_KEY);
    } catch (_) {
      /* private mode: the token lives as long as the page */
    }
  }

  function timeOf(iso) {
    const date = iso ? new Date(iso) : new Date();
    if (Number.isNaN(date.getTime())) return "";
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  async function getJson(url, options) {
    const response = await fetch(url, Object.assign({ credentials: "same-origin" }, options));
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    return { ok: response.ok, status: response.status, body };
  }

  /** Whether the gateway runs in demo mode (guest sign-in with just a name). */
  async function demoMode() {
    try {
      const res = await getJson("/api/config");
      return Boolean(res.ok && res.body && res.body.demo);
    } catch (_) {
      return false;
    }
  }

  /** A guest token from the gateway (demo mode): {token, userId, username}. */
  async function guestToken(name) {
    const res = await getJson("/api/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name }),
    });
    if (res.status === 429) throw new Error("Too many sign-ins from here; wait a minute.");
    if (!res.ok) throw new Error((res.body && res.body.error) || "Sign-in failed (" + res.status + ")");
    return res.body;
  }

  /** A Socket.IO socket for namespace `ns` on this page's gateway: the client's default
   * transports (long-polling first, then the upgrade to WebSocket where the network allows). */
  function connect(ns, token) {
    if (typeof window.io !== "function") {
      throw new Error("The Socket.IO client did not load (/socket.io/socket.io.min.js); run `make setup`.");
    }
    return window.io(ns, {
      auth: token ? { token } : {},
      reconnectionDelay: 500,
      reconnectionDelayMax: 3000,
      timeout: 10000,
    });
  }

  /** Emit with an ack; resolves the ack object, or {success:false, error} on timeout/offline. */
  function request(socket, event, payload, timeoutMs) {
    return new Promise((resolve) => {
      if (!socket || !socket.connected) {
        resolve({ success: false, error: "not connected" });
        return;
      }
      const args = payload === undefined ? [] : [payload];
      socket.timeout(timeoutMs || 8000).emit(event, ...args, (err, response) => {
        if (err) resolve({ success: false, error: "no answer from the server" });
        else if (response && typeof response === "object") resolve(response);
        else resolve({ success: response !== null && response !== undefined, value: response });
      });
    });
  }

  /** Show a message in an alert region (role=alert) until dismissed or replaced. */
  function showError(box, message) {
    const text = $(".error-text", box);
    text.textContent = String(message);
    box.hidden = false;
  }

  function hideError(box) {
    box.hidden = true;
  }

  function wireErrorBox(box) {
    const close = $("button", box);
    if (close) close.addEventListener("click", () => hideError(box));
  }

  /** Status pill: state is one of connecting, connected, reconnecting, disconnected. */
  function setStatus(node, state, text) {
    node.dataset.state = state;
    node.textContent = text;
  }

  window.SB = {
    TOKEN_KEY, el, $, decodeToken, tokenExpired, tokenFromPage, storedToken, storeToken,
    timeOf, clear, getJson, demoMode, guestToken, connect, request, showError, hideError,
    wireErrorBox, setStatus,
  };
})();
