// Creates managed room ROOM_FLOW.roomId (for tests that join it), then exits.
import { io } from "socket.io-client";
import { runFlow, within } from "./finish.mjs";

const flow = JSON.parse(process.env.ROOM_FLOW ?? "{}");
const socket = io(flow.url, { auth: { token: flow.token } });
const result = {};
runFlow("create room", 15000, [socket], result, async () => {
  await within(new Promise((resolve) => socket.once("connect", resolve)), "connect", 8000);
  const reply = await socket.timeout(8000).emitWithAck("create room",
                                                       { roomId: flow.roomId, roomName: flow.roomId });
  if (!reply.success) throw new Error(JSON.stringify(reply));
  result.created = flow.roomId;
});
