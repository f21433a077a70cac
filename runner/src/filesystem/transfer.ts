import { createHash } from "node:crypto";
import { statfs } from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type DownloadRequest,
  type DownloadResponse,
  DownloadResponseSchema,
  type UploadRequest,
  type UploadResponse,
  UploadResponseSchema,
} from "@devex/gen/devex/runner/v1/filesystem_pb.js";
import type { Activity } from "../activity.js";
import { checkWriteTarget, PendingFile, type WriteCondition } from "./atomic-write.js";
import { entryFromStats } from "./entry.js";
import { pathError, toConnectError } from "./errors.js";
import { changedSince, openForRead, readFully } from "./read.js";
import type { Resolver } from "./resolver.js";

/** The largest chunk Download sends, in bytes (1 MiB, as the contract says). */
const downloadChunkBytes = 1024 * 1024;

/**
 * Download: a header, the range in chunks of at most 1 MiB read one at a time (each is
 * handed to the transport and only then is the next one read, so memory stays at about one
 * chunk however large the file), and a trailer with the SHA-256 of what was sent. The file
 * is read through one descriptor: a file replaced atomically meanwhile is sent as it was,
 * and one changed in place (its size or times move) ends the stream with ABORTED.
 */
export async function* download(resolver: Resolver, req: DownloadRequest): AsyncGenerator<DownloadResponse> {
  const { handle, stats, entry } = await openForRead(resolver, req.path);
  try {
    if (req.offset > stats.size) {
      throw pathError(Code.OutOfRange, req.path, `has ${stats.size} bytes; offset ${req.offset} is beyond its end`);
    }
    const available = stats.size - req.offset;
    const length = req.lengthBytes === 0n || req.lengthBytes > available ? available : req.lengthBytes;
    yield create(DownloadResponseSchema, {
      kind: { case: "header", value: { entry, offset: req.offset, lengthBytes: length } },
    });
    const hash = createHash("sha256");
    let position = req.offset;
    const end = req.offset + length;
    while (position < end) {
      const size = end - position < BigInt(downloadChunkBytes) ? Number(end - position) : downloadChunkBytes;
      const chunk = new Uint8Array(size);
      const read = await readFully(handle, chunk, position);
      if (read !== size || changedSince(stats, await handle.stat({ bigint: true }))) {
        throw pathError(Code.Aborted, req.path, "was changed in place while it was being downloaded");
      }
      hash.update(chunk);
      position += BigInt(size);
      yield create(DownloadResponseSchema, { kind: { case: "chunk", value: chunk } });
    }
    yield create(DownloadResponseSchema, { kind: { case: "trailer", value: { sha256: hash.digest("hex") } } });
  } catch (error) {
    throw toConnectError(error, req.path);
  } finally {
    await handle.close();
  }
}

/**
 * Upload: the header says where and under which conditions; the chunks go to a temporary
 * file next to the target as they arrive (each is written before the next is read, so the
 * transport's flow control holds the sender back and memory stays at about one chunk), and
 * the file replaces the target only once the stream has ended, the size and SHA-256 match
 * the header and the condition still holds. A cancelled or failed upload removes the
 * temporary file and leaves the target as it was. `signal` is the call's.
 */
export async function upload(
  resolver: Resolver,
  activity: Activity,
  requests: AsyncIterable<UploadRequest>,
  signal: AbortSignal,
): Promise<UploadResponse> {
  const iterator = requests[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done || first.value.kind.case !== "header") {
    throw new ConnectError("the first message of an upload must be its header", Code.InvalidArgument);
  }
  const header = first.value.kind.value;
  const condition = header.condition as WriteCondition;
  const mustNotExist = condition.case === "mustNotExist" && condition.value;
  // A must_not_exist upload refuses a symlink at the path instead of writing through it.
  const target = await resolver.resolve(header.path, { follow: !mustNotExist, createParents: header.createParents });
  let pending: PendingFile | undefined;
  try {
    checkWriteTarget(target, target.stats, condition);
    if (header.sizeBytes !== undefined) {
      const space = await statfs(target.dir.self, { bigint: true });
      const free = space.bavail * space.bsize;
      if (header.sizeBytes > free) {
        throw pathError(
          Code.ResourceExhausted,
          header.path,
          `cannot be written: ${header.sizeBytes} bytes announced, ${free} free`,
        );
      }
    }
    pending = await PendingFile.create(target, header.mode);
    const hash = createHash("sha256");
    let received = 0n;
    for (;;) {
      const next = await iterator.next();
      if (next.done) break;
      if (next.value.kind.case !== "chunk") {
        throw new ConnectError("an upload has one header, before every chunk", Code.InvalidArgument);
      }
      const chunk = next.value.kind.value;
      received += BigInt(chunk.byteLength);
      if (header.sizeBytes !== undefined && received > header.sizeBytes) {
        throw pathError(Code.DataLoss, header.path, `received more than the ${header.sizeBytes} bytes announced`);
      }
      hash.update(chunk);
      await pending.write(chunk);
      activity.touch();
    }
    // A cancelled upload can look complete: connect-es ends the request stream cleanly when
    // its call is aborted and resets the HTTP/2 stream just after, and Node ends a request
    // body normally on a reset too. Only the call's signal tells them apart, so it is checked
    // after the fsync (which gives the reset time to arrive) and a turn of the event loop.
    // With size_bytes in the header a cut-off upload is refused whatever the timing.
    await pending.flush();
    await new Promise((resolve) => setImmediate(resolve));
    if (signal.aborted) {
      throw pathError(Code.Canceled, header.path, "was not written: the client cancelled the upload");
    }
    if (header.sizeBytes !== undefined && received !== header.sizeBytes) {
      throw pathError(Code.DataLoss, header.path, `received ${received} of the ${header.sizeBytes} bytes announced`);
    }
    const sha256 = hash.digest("hex");
    if (header.sha256 && header.sha256 !== sha256) {
      throw pathError(Code.DataLoss, header.path, `content has SHA-256 ${sha256}, not ${header.sha256}`);
    }
    const { created, stats } = await pending.commit(condition);
    activity.touch();
    return create(UploadResponseSchema, {
      entry: entryFromStats(target.rel, target.name, stats),
      writtenBytes: received,
      sha256,
      created,
    });
  } catch (error) {
    await pending?.abort();
    throw toConnectError(error, header.path);
  } finally {
    await target.close();
  }
}
