"""The seed document's chat server on python-socketio 5 (AsyncServer, ASGI, uvicorn + uvloop).

    python bench/peers/pysio/server.py PORT        (JWT_SECRET from the environment)

The same logic as ``bench/peers/node/server.mjs`` (see its header for what is kept from the
seed and what a benchmark changes): JWT auth on connect, ``welcome`` + ``user online``, rooms
with ``user joined`` / ``room joined`` / ``room error``, ``chat message`` to the others in the
room + ack, ``private message``, ``/chat``. Validation mirrors the seed's Joi schemas by hand.
"""

from __future__ import annotations

import os
import random
import re
import string
import sys
import time
from datetime import UTC, datetime
from typing import Any

import jwt
import socketio
import uvicorn

JWT_SECRET = os.environ.get("JWT_SECRET", "")
SERVER_ID = os.environ.get("SERVER_ID", "server-1")

sio = socketio.AsyncServer(
    async_mode="asgi",
    transports=["websocket"],
    ping_interval=25,
    ping_timeout=20,
    max_http_buffer_size=1_000_000,
    cors_allowed_origins="*",
)


async def health(scope: Any, receive: Any, send: Any) -> None:
    body = b'{"status":"healthy"}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


app = socketio.ASGIApp(sio, other_asgi_app=health)

TAGS = re.compile(r"<[^>]*>")
BANNED = [re.compile(word, re.IGNORECASE) for word in ("spam", "abuse", "inappropriate")]
ALPHABET = string.ascii_lowercase + string.digits


class Invalid(Exception):
    pass


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message_id() -> str:
    return f"msg_{int(time.time() * 1000)}_{''.join(random.choices(ALPHABET, k=9))}"


def sanitize(content: str) -> str:
    text = TAGS.sub("", content)
    for regex in BANNED:
        text = regex.sub("***", text)
    return text.strip()


def text(data: dict[str, Any], name: str, low: int, high: int | None,
         required: bool = True) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise Invalid(f'"{name}" is required')
        return None
    if not isinstance(value, str):
        raise Invalid(f'"{name}" must be a string')
    if len(value) < low or (high is not None and len(value) > high):
        raise Invalid(f'"{name}" length must be {low}..{high}')
    return value


def obj(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise Invalid('"value" must be of type object')
    return data


class Room:
    def __init__(self, room_id: str, name: str, created_by: str, max_users: int,
                 is_private: bool, password: str | None) -> None:
        self.id = room_id
        self.name = name
        self.created_at = now_iso()
        self.created_by = created_by
        self.max_users = max_users
        self.is_private = is_private
        self.password = password
        self.users: set[str] = set()


class Users:
    """sid -> {userId, username, role} per namespace."""

    def __init__(self) -> None:
        self.by_sid: dict[str, dict[str, Any]] = {}


rooms: dict[str, Room] = {}
user_rooms: dict[str, set[str]] = {}
main_users = Users()
chat_users = Users()


def authenticate(auth: Any, environ: dict[str, Any]) -> dict[str, Any]:
    token = auth.get("token") if isinstance(auth, dict) else None
    token = token or environ.get("HTTP_AUTHORIZATION")
    if not token:
        raise socketio.exceptions.ConnectionRefusedError(
            "Authentication error: No token provided")
    try:
        claims = jwt.decode(token.replace("Bearer ", ""), JWT_SECRET, algorithms=["HS256"])
    except jwt.PyJWTError:
        raise socketio.exceptions.ConnectionRefusedError(
            "Authentication error: Invalid token") from None
    return {"userId": claims.get("userId"), "username": claims.get("username"),
            "role": claims.get("role")}


# ---- namespace "/" ----
@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
    user = authenticate(auth, environ)
    main_users.by_sid[sid] = user
    await sio.emit("welcome", {"message": f"Welcome {user['username']}!", "socketId": sid,
                               "serverId": SERVER_ID, "timestamp": now_iso()}, to=sid)
    await sio.emit("user online", {"userId": user["userId"], "username": user["username"]},
                   skip_sid=sid)


@sio.event
async def disconnect(sid: str, *_: Any) -> None:
    user = main_users.by_sid.pop(sid, None) or {}
    for room_id in list(user_rooms.get(sid, ())):
        await leave(sid, user, room_id)
    user_rooms.pop(sid, None)
    await sio.emit("user offline", {"userId": user.get("userId"),
                                    "username": user.get("username")}, skip_sid=sid)


@sio.on("set username")
async def set_username(sid: str, username: Any) -> None:
    if sid in main_users.by_sid:
        main_users.by_sid[sid]["username"] = username


@sio.on("chat message")
async def chat_message(sid: str, data: Any) -> dict[str, Any]:
    user = main_users.by_sid.get(sid, {})
    try:
        data = obj(data)
        content = text(data, "content", 1, 1000)
        room_id = text(data, "roomId", 0, None, required=False)
        kind = data.get("type", "text")
        if kind not in ("text", "image", "file"):
            raise Invalid('"type" must be one of [text, image, file]')
    except Invalid as exc:
        return {"success": False, "error": f"validation failed: {exc}"}
    assert content is not None
    message = {"id": message_id(), "from": user.get("userId"), "username": user.get("username"),
               "content": sanitize(content), "type": kind, "roomId": room_id,
               "timestamp": now_iso()}
    if room_id:
        await sio.emit("chat message", message, room=room_id, skip_sid=sid)
    else:
        await sio.emit("chat message", message, skip_sid=sid)
    return {"success": True, "messageId": message["id"]}


@sio.on("private message")
async def private_message(sid: str, data: Any) -> dict[str, Any]:
    user = main_users.by_sid.get(sid, {})
    try:
        data = obj(data)
        to = text(data, "to", 0, None)
        content = text(data, "content", 1, 1000)
    except Invalid as exc:
        return {"success": False, "error": f"validation failed: {exc}"}
    assert content is not None
    message = {"id": message_id(), "from": user.get("userId"), "to": to,
               "content": sanitize(content), "type": "private", "timestamp": now_iso()}
    for target, other in main_users.by_sid.items():
        if other.get("userId") == to:
            await sio.emit("private message", message, to=target)
            return {"success": True, "messageId": message["id"]}
    return {"success": False, "error": "user not online"}


@sio.on("create room")
async def create_room(sid: str, data: Any) -> dict[str, Any]:
    user = main_users.by_sid.get(sid, {})
    try:
        data = obj(data)
        room_id = text(data, "roomId", 1, 50)
        name = text(data, "roomName", 1, 100)
        is_private = bool(data.get("isPrivate", False))
        password = text(data, "password", 0, None, required=is_private)
        max_users = data.get("maxUsers", 100)
        if not isinstance(max_users, int) or not 1 <= max_users <= 1000:
            raise Invalid('"maxUsers" must be an integer 1..1000')
    except Invalid as exc:
        return {"success": False, "error": f"validation failed: {exc}"}
    assert room_id is not None and name is not None
    if room_id in rooms:
        return {"success": False, "roomId": None}
    rooms[room_id] = Room(room_id, name, str(user.get("userId")), max_users, is_private,
                          password)
    return {"success": True, "roomId": room_id}


@sio.on("join room")
async def join_room(sid: str, data: Any) -> dict[str, Any]:
    user = main_users.by_sid.get(sid, {})
    try:
        data = obj(data)
        room_id = text(data, "roomId", 1, 50)
        password = text(data, "password", 0, None, required=False)
    except Invalid as exc:
        return {"success": False, "error": f"validation failed: {exc}"}
    assert room_id is not None
    room = rooms.get(room_id)
    error = None
    if room is None:
        error = "room not found"
    elif room.is_private and room.password != password:
        error = "wrong password"
    elif len(room.users) >= room.max_users:
        error = "room is full"
    if error is not None or room is None:
        await sio.emit("room error", {"message": error}, to=sid)
        return {"success": False, "roomId": room_id}
    await sio.enter_room(sid, room_id)
    room.users.add(sid)
    user_rooms.setdefault(sid, set()).add(room_id)
    await sio.emit("user joined", {"socketId": sid, "username": user.get("username"),
                                   "roomId": room_id, "userCount": len(room.users)},
                   room=room_id, skip_sid=sid)
    await sio.emit("room joined", {"roomId": room_id, "roomName": room.name,
                                   "userCount": len(room.users), "users": list(room.users)},
                   to=sid)
    return {"success": True, "roomId": room_id}


async def leave(sid: str, user: dict[str, Any], room_id: str) -> bool:
    room = rooms.get(room_id)
    if room is None or sid not in room.users:
        return False
    await sio.leave_room(sid, room_id)
    room.users.discard(sid)
    user_rooms.get(sid, set()).discard(room_id)
    await sio.emit("user left", {"socketId": sid, "username": user.get("username"),
                                 "roomId": room_id, "userCount": len(room.users)},
                   room=room_id, skip_sid=sid)
    if not room.users:
        rooms.pop(room_id, None)  # concurrent departures may both see it empty
    return True


@sio.on("leave room")
async def leave_room(sid: str, room_id: Any) -> dict[str, Any]:
    left = await leave(sid, main_users.by_sid.get(sid, {}), str(room_id))
    return {"success": left, "roomId": room_id}


@sio.on("get rooms")
async def get_rooms(sid: str, *_: Any) -> dict[str, Any]:
    return {"success": True, "rooms": [
        {"id": r.id, "name": r.name, "userCount": len(r.users), "maxUsers": r.max_users,
         "createdAt": r.created_at} for r in rooms.values() if not r.is_private]}


@sio.on("get online users")
async def get_online_users(sid: str, *_: Any) -> dict[str, Any]:
    return {"success": True, "users": [
        {"id": u.get("userId"), "username": u.get("username"), "socketId": s}
        for s, u in main_users.by_sid.items()]}


# ---- namespace "/chat" ----
async def connect_chat(sid: str, environ: dict[str, Any], auth: Any) -> None:
    user = authenticate(auth, environ)
    chat_users.by_sid[sid] = user
    await sio.enter_room(sid, f"user:{user['userId']}", namespace="/chat")


sio.on("connect", connect_chat, namespace="/chat")


@sio.on("disconnect", namespace="/chat")
async def disconnect_chat(sid: str, *_: Any) -> None:
    chat_users.by_sid.pop(sid, None)


@sio.on("chat message", namespace="/chat")
async def chat_chat_message(sid: str, data: Any) -> dict[str, Any]:
    user = chat_users.by_sid.get(sid, {})
    data = data if isinstance(data, dict) else {}
    message = {"id": message_id(), "from": user.get("userId"), "username": user.get("username"),
               "content": data.get("content"), "type": data.get("type") or "text",
               "timestamp": now_iso()}
    if data.get("roomId"):
        await sio.emit("chat message", message, room=data["roomId"], skip_sid=sid,
                       namespace="/chat")
    else:
        await sio.emit("chat message", message, namespace="/chat")
    return {"success": True, "messageId": message["id"]}


@sio.on("private message", namespace="/chat")
async def chat_private_message(sid: str, data: Any) -> dict[str, Any]:
    user = chat_users.by_sid.get(sid, {})
    data = data if isinstance(data, dict) else {}
    message = {"id": message_id(), "from": user.get("userId"), "to": data.get("to"),
               "content": data.get("content"), "type": "private", "timestamp": now_iso()}
    await sio.emit("private message", message, room=f"user:{data.get('to')}", skip_sid=sid,
                   namespace="/chat")
    await sio.emit("message sent", {"messageId": message["id"]}, to=sid, namespace="/chat")
    return {"success": True, "messageId": message["id"]}


def main() -> None:
    if not JWT_SECRET:
        sys.exit("JWT_SECRET is required")
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    host = os.environ.get("HOST", "127.0.0.1")
    uvicorn.run(app, host=host, port=port, loop="uvloop", ws="auto",
                log_level="warning", access_log=False, lifespan="off",
                ws_max_size=1_000_000, ws_ping_interval=None, ws_per_message_deflate=False)


if __name__ == "__main__":
    main()
