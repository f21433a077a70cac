import { createServer } from "node:http";

const port = Number(process.env.PORT ?? 3000);

createServer((request, response) => {
  response.writeHead(200, { "content-type": "text/plain; charset=utf-8" });
  response.end(`Hello from your repl: ${request.method} ${request.url}\n`);
}).listen(port, () => console.log(`listening on http://localhost:${port}`));
