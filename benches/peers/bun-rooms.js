// A uWebSockets-based peer for benches/fanout.sh: Bun's WebSocket server
// (uWebSockets inside, one thread) speaking wsloop's JSON room protocol:
// join / leave / publish / ping, everything else echoed. A bench peer, never
// part of the product.
//
//   bun benches/peers/bun-rooms.js PORT
const port = Number(process.argv[2] || 18096);
// Every connection is in this topic, for broadcasts.
const EVERYONE = "\u0000everyone";

Bun.serve({
  hostname: "127.0.0.1",
  port,
  fetch(req, server) {
    if (server.upgrade(req)) return;
    return new Response("WebSocket only\n", { status: 426 });
  },
  websocket: {
    open(ws) {
      ws.subscribe(EVERYONE);
    },
    perMessageDeflate: false,
    maxPayloadLength: 64 * 1024 * 1024,
    idleTimeout: 120,
    message(ws, message) {
      if (typeof message !== "string" || message[0] !== "{") {
        ws.send(message);
        return;
      }
      let cmd;
      try {
        cmd = JSON.parse(message);
      } catch {
        ws.send(message);
        return;
      }
      switch (cmd.type) {
        case "join":
          ws.subscribe(cmd.room);
          ws.send(JSON.stringify({ type: "joined", room: cmd.room }));
          break;
        case "leave":
          ws.unsubscribe(cmd.room);
          ws.send(JSON.stringify({ type: "left", room: cmd.room }));
          break;
        case "publish": {
          const out = JSON.stringify({ type: "message", room: cmd.room, data: cmd.data ?? null });
          // ws.publish skips the sender; the server's reaches it too.
          if (cmd.echo === false) ws.publish(cmd.room, out);
          else ws.cork(() => { ws.publish(cmd.room, out); if (ws.isSubscribed(cmd.room)) ws.send(out); });
          break;
        }
        case "broadcast": {
          const out = JSON.stringify({ type: "broadcast", data: cmd.data ?? null });
          if (cmd.echo === false) ws.publish(EVERYONE, out);
          else ws.cork(() => { ws.publish(EVERYONE, out); ws.send(out); });
          break;
        }
        case "ping":
          ws.send(JSON.stringify({ type: "pong", payload: cmd.payload ?? null, ts: Date.now() }));
          break;
        default:
          ws.send(message);
      }
    },
  },
});
console.error(`bun-rooms listening on ws://127.0.0.1:${port}/ws`);
