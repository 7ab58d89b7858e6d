// The sharp peer of bench/bench_peers.py: GET /{attention|centre}/NAME fetches ORIGIN/NAME and answers
// a 200 px square JPEG, quality 85. Usage: NODE_PATH=bench/out/sharp/node_modules node sharp_server.js PORT ORIGIN
"use strict";
const http = require("node:http");
const sharp = require("sharp");

const [port, origin] = process.argv.slice(2);
sharp.cache(false); // every request a full render, as in the other peers (libvips' operation cache off)

http.createServer(async (req, res) => {
  try {
    const [, position, ...name] = req.url.split("/");
    const src = await fetch(`${origin}/${name.join("/")}`);
    if (!src.ok) throw new Error(`origin answered ${src.status}`);
    const out = await sharp(Buffer.from(await src.arrayBuffer()))
      .rotate()
      .resize(200, 200, { fit: "cover", position: position === "centre" ? "centre" : "attention" })
      .jpeg({ quality: 85 })
      .toBuffer();
    res.writeHead(200, { "Content-Type": "image/jpeg", "Content-Length": out.length }).end(out);
  } catch (err) {
    res.writeHead(502, { "Content-Type": "text/plain" }).end(String(err));
  }
}).listen(Number(port), "127.0.0.1");
