import * as http2 from "node:http2";

/** What {@link sendOversizedMessage} got back. */
export interface OversizedAnswer {
  /** The HTTP status. */
  status: number;
  /** `grpc-status` (gRPC, gRPC-web in headers) or the Connect error code; undefined if none came. */
  code: string | undefined;
  /** `grpc-message` or the Connect error message. */
  message: string;
  /** The bytes of the body sent before the answer came. */
  sentBytes: number;
  durationMs: number;
}

/** Options for {@link sendOversizedMessage}. */
export interface OversizedOptions {
  /** `grpc` (default) sends one enveloped message; `connect` a unary Connect body with its content-length. */
  protocol?: "grpc" | "grpc-web" | "connect";
  /** The message size the request declares (its length prefix or content-length). */
  declaredBytes: number;
  /** How much of the body to send at most, in 1 MiB chunks. Default `declaredBytes`. */
  sendBytes?: number;
  headers?: Record<string, string>;
}

/**
 * Sends one request at `url` + `path` over h2c that declares a `declaredBytes` message and
 * streams its body in 1 MiB chunks (one buffer, never the whole message at once) until the
 * server answers or `sendBytes` went out; then cancels the rest.
 */
export function sendOversizedMessage(url: string, path: string, options: OversizedOptions): Promise<OversizedAnswer> {
  const protocol = options.protocol ?? "grpc";
  const sendBytes = options.sendBytes ?? options.declaredBytes;
  const session = http2.connect(url);
  session.on("error", () => {});
  const started = performance.now();
  const headers: http2.OutgoingHttpHeaders = {
    ":method": "POST",
    ":path": path,
    ...(protocol === "connect"
      ? {
          "content-type": "application/proto",
          "connect-protocol-version": "1",
          "content-length": options.declaredBytes,
        }
      : { "content-type": protocol === "grpc" ? "application/grpc" : "application/grpc-web+proto", te: "trailers" }),
    ...options.headers,
  };
  return new Promise((resolve) => {
    const stream = session.request(headers);
    stream.on("error", () => {});
    let answered = false;
    let status = 0;
    let code: string | undefined;
    let message = "";
    let body = "";
    let sentBytes = 0;
    const take = (h: http2.IncomingHttpHeaders) => {
      if (h["grpc-status"] !== undefined) code = String(h["grpc-status"]);
      if (h["grpc-message"] !== undefined) message = decodeURIComponent(String(h["grpc-message"]));
    };
    stream.on("response", (h) => {
      answered = true;
      status = Number(h[":status"]);
      take(h);
    });
    stream.on("trailers", take);
    // The answer is complete: whatever of the body is left is not sent.
    stream.on("end", () => stream.close(http2.constants.NGHTTP2_CANCEL));
    stream.on("data", (chunk: Buffer) => {
      if (body.length < 4096) body += chunk.toString("latin1");
    });
    stream.on("close", () => {
      session.close();
      if (code === undefined && body) {
        const grpcWeb = /grpc-status: *(\d+)/.exec(body);
        if (grpcWeb) {
          code = grpcWeb[1];
          message = decodeURIComponent(/grpc-message: *([^\r\n]*)/.exec(body)?.[1] ?? "");
        } else {
          try {
            const json = JSON.parse(body) as { code?: string; message?: string };
            code = json.code;
            message = json.message ?? "";
          } catch {}
        }
      }
      resolve({ status, code, message, sentBytes, durationMs: performance.now() - started });
    });
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(options.declaredBytes, 1);
    if (protocol !== "connect") stream.write(prefix);
    const chunk = Buffer.alloc(1024 * 1024, 0x61);
    const pump = () => {
      while (!answered && !stream.destroyed && sentBytes < sendBytes) {
        sentBytes += chunk.length;
        if (!stream.write(chunk)) {
          stream.once("drain", pump);
          return;
        }
      }
      // Once answered, the rest is not sent; the stream is closed when the answer ends.
      if (!answered) stream.end();
    };
    pump();
  });
}
