// The seed document's chat server (shared/seed/000_34c7b37aa9523f03.txt, the "complete" server
// of its cluster section) on Node socket.io 4.8: the reference peer of bench/.
//
//   node server.mjs PORT            (JWT_SECRET from the environment)
//
// Kept from the seed: JWT auth middleware (HS256, `auth.token` or `Authorization: Bearer`),
// `welcome` + `user online` on connect, Joi validation and the regex sanitiser, the
// RoomManager (create / join / leave rooms, `user joined`, `room joined`, `room error`),
// `chat message` -> `socket.to(roomId).emit(...)` (or `socket.broadcast.emit`) + ack,
// `private message`, `get rooms`, `get online users`, `user offline` on disconnect, and the
// `/chat` namespace (auth, room `user:<id>`, chat and private messages).
// Changed for a benchmark, as the system under test is configured: the secret is prepared once
// as a KeyObject (given a string, jsonwebtoken 9 re-parses it on every verify, first trying it
// as a PEM public key: about 3 ms of CPU per connect here), no console.log per event
// (saveMessage stays an async no-op: the seed's "database" is a stub), the per-IP connect
// rate limit is off unless CONNECT_LIMIT is set, websocket transport only, and the
// Engine.IO timings are the socket.io defaults (pingInterval 25 s, pingTimeout 20 s).
import { createSecretKey } from "node:crypto";
import http from "node:http";
import process from "node:process";
import Joi from "joi";
import jwt from "jsonwebtoken";
import { Server } from "socket.io";

const PORT = Number(process.argv[2] || process.env.PORT || 3000);
const HOST = process.env.HOST || "127.0.0.1";
const JWT_SECRET = process.env.JWT_SECRET;
const CONNECT_LIMIT = Number(process.env.CONNECT_LIMIT || 0); // seed: 50 per IP per minute
if (!JWT_SECRET) {
  console.error("JWT_SECRET is required");
  process.exit(2);
}
const JWT_KEY = createSecretKey(Buffer.from(JWT_SECRET));

const server = http.createServer((req, res) => {
  if (req.url === "/health") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ status: "healthy", connections: io.engine.clientsCount }));
    return;
  }
  res.writeHead(404);
  res.end();
});
const io = new Server(server, {
  transports: ["polling", "websocket"],
  pingInterval: 25000,
  pingTimeout: 20000,
  maxHttpBufferSize: 1e6,
  serveClient: false,
  // RECOVERY=1: Socket.IO 4.6's connection state recovery (the jitter bench), at its
  // documented defaults.
  ...(process.env.RECOVERY
    ? { connectionStateRecovery: { maxDisconnectionDuration: 120000, skipMiddlewares: true } }
    : {}),
});

// ---- validation and sanitising (seed: Joi schemas, sanitizeContent) ----
const schemas = {
  "chat message": Joi.object({
    content: Joi.string().min(1).max(1000).required(),
    roomId: Joi.string().optional(),
    type: Joi.string().valid("text", "image", "file").default("text"),
  }),
  "join room": Joi.object({
    roomId: Joi.string().min(1).max(50).required(),
    password: Joi.string().optional(),
  }),
  "private message": Joi.object({
    to: Joi.string().required(),
    content: Joi.string().min(1).max(1000).required(),
  }),
  "create room": Joi.object({
    roomId: Joi.string().min(1).max(50).required(),
    roomName: Joi.string().min(1).max(100).required(),
    isPrivate: Joi.boolean().default(false),
    password: Joi.string().when("isPrivate", {
      is: true,
      then: Joi.required(),
      otherwise: Joi.optional(),
    }),
    maxUsers: Joi.number().integer().min(1).max(1000).default(100),
  }),
};

function validateEventData(eventName, data) {
  const schema = schemas[eventName];
  if (!schema) return data;
  const { error, value } = schema.validate(data);
  if (error) throw new Error(`validation failed: ${error.details[0].message}`);
  return value;
}

const bannedWords = ["spam", "abuse", "inappropriate"].map((w) => new RegExp(w, "gi"));
function sanitizeContent(content) {
  let filtered = content.replace(/<[^>]*>/g, "");
  for (const regex of bannedWords) filtered = filtered.replace(regex, "***");
  return filtered.trim();
}

function generateMessageId() {
  return `msg_${Date.now()}_${Math.random().toString(36).substr(2, 9)}`;
}

async function saveMessage(_message) {} // the seed's stub database
async function savePrivateMessage(_message) {}

// ---- rooms (seed: RoomManager) ----
class RoomManager {
  constructor() {
    this.rooms = new Map(); // roomId -> room info
    this.userRooms = new Map(); // socketId -> Set of roomIds
  }

  createRoom(roomId, roomInfo = {}) {
    if (this.rooms.has(roomId)) return false;
    this.rooms.set(roomId, {
      id: roomId,
      name: roomInfo.name || roomId,
      createdAt: new Date(),
      createdBy: roomInfo.createdBy,
      maxUsers: roomInfo.maxUsers || 100,
      isPrivate: roomInfo.isPrivate || false,
      password: roomInfo.password,
      users: new Set(),
    });
    return true;
  }

  async joinRoom(socket, roomId, password = null) {
    const room = this.rooms.get(roomId);
    if (!room) {
      socket.emit("room error", { message: "room not found" });
      return false;
    }
    if (room.isPrivate && room.password !== password) {
      socket.emit("room error", { message: "wrong password" });
      return false;
    }
    if (room.users.size >= room.maxUsers) {
      socket.emit("room error", { message: "room is full" });
      return false;
    }
    await socket.join(roomId);
    room.users.add(socket.id);
    if (!this.userRooms.has(socket.id)) this.userRooms.set(socket.id, new Set());
    this.userRooms.get(socket.id).add(roomId);
    socket.to(roomId).emit("user joined", {
      socketId: socket.id,
      username: socket.username,
      roomId,
      userCount: room.users.size,
    });
    socket.emit("room joined", {
      roomId,
      roomName: room.name,
      userCount: room.users.size,
      users: Array.from(room.users),
    });
    return true;
  }

  async leaveRoom(socket, roomId) {
    const room = this.rooms.get(roomId);
    if (!room || !room.users.has(socket.id)) return false;
    await socket.leave(roomId);
    room.users.delete(socket.id);
    this.userRooms.get(socket.id)?.delete(roomId);
    socket.to(roomId).emit("user left", {
      socketId: socket.id,
      username: socket.username,
      roomId,
      userCount: room.users.size,
    });
    if (room.users.size === 0) this.rooms.delete(roomId);
    return true;
  }

  async leaveAllRooms(socket) {
    const rooms = this.userRooms.get(socket.id);
    if (!rooms) return;
    for (const roomId of Array.from(rooms)) await this.leaveRoom(socket, roomId);
    this.userRooms.delete(socket.id);
  }

  getRoomList() {
    const list = [];
    for (const [roomId, room] of this.rooms) {
      if (!room.isPrivate) {
        list.push({
          id: roomId,
          name: room.name,
          userCount: room.users.size,
          maxUsers: room.maxUsers,
          createdAt: room.createdAt,
        });
      }
    }
    return list;
  }
}
const roomManager = new RoomManager();

// ---- middleware (seed: rate limit per IP, JWT auth) ----
const socketRateLimiter = new Map();
function rateLimit(socket, next) {
  if (CONNECT_LIMIT <= 0) return next();
  const clientId = socket.handshake.address;
  const now = Date.now();
  const entry = socketRateLimiter.get(clientId);
  if (!entry || now > entry.resetTime) {
    socketRateLimiter.set(clientId, { count: 1, resetTime: now + 60000 });
    return next();
  }
  if (entry.count < CONNECT_LIMIT) {
    entry.count++;
    return next();
  }
  return next(new Error("Rate limit exceeded"));
}

function authMiddleware(socket, next) {
  const token = socket.handshake.auth.token || socket.handshake.headers.authorization;
  if (!token) return next(new Error("Authentication error: No token provided"));
  try {
    const decoded = jwt.verify(token.replace("Bearer ", ""), JWT_KEY, {
      algorithms: ["HS256"],
    });
    socket.userId = decoded.userId;
    socket.username = decoded.username;
    socket.role = decoded.role;
    next();
  } catch {
    next(new Error("Authentication error: Invalid token"));
  }
}

io.use(rateLimit);
io.use(authMiddleware);

// ---- namespace "/" ----
io.on("connection", (socket) => {
  socket.emit("welcome", {
    message: `Welcome ${socket.username}!`,
    socketId: socket.id,
    serverId: process.env.SERVER_ID || "server-1",
    timestamp: new Date().toISOString(),
  });
  socket.broadcast.emit("user online", { userId: socket.userId, username: socket.username });

  socket.on("set username", (username) => {
    socket.username = username;
  });

  socket.on("chat message", async (data, callback) => {
    try {
      const validated = validateEventData("chat message", data);
      const message = {
        id: generateMessageId(),
        from: socket.userId,
        username: socket.username,
        content: sanitizeContent(validated.content),
        type: validated.type,
        roomId: validated.roomId,
        timestamp: new Date().toISOString(),
      };
      await saveMessage(message);
      if (message.roomId) socket.to(message.roomId).emit("chat message", message);
      else socket.broadcast.emit("chat message", message);
      if (callback) callback({ success: true, messageId: message.id });
    } catch (error) {
      if (callback) callback({ success: false, error: error.message });
    }
  });

  socket.on("private message", async (data, callback) => {
    try {
      const validated = validateEventData("private message", data);
      const message = {
        id: generateMessageId(),
        from: socket.userId,
        to: validated.to,
        content: sanitizeContent(validated.content),
        type: "private",
        timestamp: new Date().toISOString(),
      };
      await savePrivateMessage(message);
      const target = findUserSocket(validated.to);
      if (target) {
        target.emit("private message", message);
        if (callback) callback({ success: true, messageId: message.id });
      } else if (callback) {
        callback({ success: false, error: "user not online" });
      }
    } catch (error) {
      if (callback) callback({ success: false, error: error.message });
    }
  });

  socket.on("create room", async (data, callback) => {
    try {
      const v = validateEventData("create room", data);
      const created = roomManager.createRoom(v.roomId, {
        name: v.roomName,
        createdBy: socket.userId,
        isPrivate: v.isPrivate,
        password: v.password,
        maxUsers: v.maxUsers,
      });
      if (callback) callback({ success: created, roomId: created ? v.roomId : null });
    } catch (error) {
      if (callback) callback({ success: false, error: error.message });
    }
  });

  socket.on("join room", async (data, callback) => {
    try {
      const v = validateEventData("join room", data);
      const joined = await roomManager.joinRoom(socket, v.roomId, v.password);
      if (callback) callback({ success: joined, roomId: v.roomId });
    } catch (error) {
      if (callback) callback({ success: false, error: error.message });
    }
  });

  socket.on("leave room", async (roomId, callback) => {
    try {
      const left = await roomManager.leaveRoom(socket, roomId);
      if (callback) callback({ success: left, roomId });
    } catch (error) {
      if (callback) callback({ success: false, error: error.message });
    }
  });

  socket.on("get rooms", (callback) => {
    if (typeof callback === "function") {
      callback({ success: true, rooms: roomManager.getRoomList() });
    }
  });

  socket.on("get online users", (callback) => {
    if (typeof callback === "function") callback({ success: true, users: getOnlineUsers() });
  });

  socket.on("disconnect", async () => {
    await roomManager.leaveAllRooms(socket);
    socket.broadcast.emit("user offline", { userId: socket.userId, username: socket.username });
  });
});

function findUserSocket(userId) {
  for (const [, socket] of io.sockets.sockets) if (socket.userId === userId) return socket;
  return null;
}

function getOnlineUsers() {
  const users = [];
  for (const [socketId, socket] of io.sockets.sockets) {
    users.push({ id: socket.userId, username: socket.username, socketId });
  }
  return users;
}

// ---- namespace "/chat" (seed: chatNamespace) ----
const chatNamespace = io.of("/chat");
chatNamespace.use(authMiddleware);
chatNamespace.on("connection", (socket) => {
  socket.join(`user:${socket.userId}`);

  socket.on("chat message", (data, callback) => {
    const message = {
      id: generateMessageId(),
      from: socket.userId,
      username: socket.username,
      content: data?.content,
      type: data?.type || "text",
      timestamp: new Date().toISOString(),
    };
    saveMessage(message);
    if (data?.roomId) socket.to(data.roomId).emit("chat message", message);
    else chatNamespace.emit("chat message", message);
    if (typeof callback === "function") callback({ success: true, messageId: message.id });
  });

  socket.on("private message", (data, callback) => {
    const message = {
      id: generateMessageId(),
      from: socket.userId,
      to: data?.to,
      content: data?.content,
      type: "private",
      timestamp: new Date().toISOString(),
    };
    savePrivateMessage(message);
    socket.to(`user:${data?.to}`).emit("private message", message);
    socket.emit("message sent", { messageId: message.id });
    if (typeof callback === "function") callback({ success: true, messageId: message.id });
  });
});

server.listen(PORT, HOST, () => {
  console.log(`node socket.io peer listening on ${HOST}:${PORT}`);
});

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    io.close();
    process.exit(0);
  });
}
