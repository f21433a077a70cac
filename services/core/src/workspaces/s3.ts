import { createHash } from "node:crypto";
import {
  AbortMultipartUploadCommand,
  type CompletedPart,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import {
  type AbortUploadsOptions,
  type GetOptions,
  type ListOptions,
  type ListResult,
  type ObjectInfo,
  type PutOptions,
  type PutResult,
  readWorkspaceBody,
  resolveListLimit,
  validateWorkspaceKey,
  validateWorkspacePrefix,
  type WorkspaceBody,
  WorkspaceObjectNotFoundError,
  type WorkspaceStore,
  WorkspaceStoreUnavailableError,
} from "./store.js";

/** Options for {@link createS3WorkspaceStore}. */
export interface S3WorkspaceStoreOptions {
  /** The S3 endpoint, e.g. `http://127.0.0.1:8080`; AWS's when unset. */
  endpoint?: string;
  region: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Path-style URLs (`endpoint/bucket/key`), needed by most S3-compatible stores. Default false. */
  forcePathStyle?: boolean;
  /**
   * The size of a multipart upload's parts, at least 5 MiB; default 8 MiB. Bodies up to this
   * size go in one PutObject. A put holds at most three parts in memory (two uploading, one filling).
   */
  partSizeBytes?: number;
  /**
   * Bounds each request, in ms, default 30,000: until the response headers arrive, and then
   * every idle gap of the connection (so a long download is not cut while bytes flow).
   */
  requestTimeoutMs?: number;
  /** Attempts per request, retries included (the SDK's retry strategy); default 3. */
  maxAttempts?: number;
  /** Create the bucket at start if it does not exist. Default false. */
  createBucket?: boolean;
}

const MIB = 1024 * 1024;
/** The smallest part S3 accepts (except the last). */
export const MIN_PART_SIZE_BYTES = 5 * MIB;
const DEFAULT_PART_SIZE_BYTES = 8 * MIB;
const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** Parts uploading at once. */
const PARTS_IN_FLIGHT = 2;

/** A workspace store over an S3 bucket (AWS S3, MinIO, Ceph, Swift's s3api...). */
export async function createS3WorkspaceStore(options: S3WorkspaceStoreOptions): Promise<WorkspaceStore> {
  const partSizeBytes = options.partSizeBytes ?? DEFAULT_PART_SIZE_BYTES;
  if (!Number.isInteger(partSizeBytes) || partSizeBytes < MIN_PART_SIZE_BYTES) {
    throw new RangeError(`partSizeBytes must be an integer of at least ${MIN_PART_SIZE_BYTES}, got ${partSizeBytes}`);
  }
  const requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const client = new S3Client({
    ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }),
    region: options.region,
    forcePathStyle: options.forcePathStyle ?? false,
    credentials: { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey },
    maxAttempts: options.maxAttempts ?? 3,
    requestHandler: { connectionTimeout: requestTimeoutMs, requestTimeout: requestTimeoutMs },
    // Checksums only where S3 demands them: S3-compatible stores do not all know the newer ones.
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
  addDeleteObjectsContentMd5(client);
  const store = new S3WorkspaceStore(client, options.bucket, partSizeBytes, requestTimeoutMs);
  if (options.createBucket) {
    try {
      await store.ensureBucket();
    } catch (error) {
      client.destroy();
      throw error;
    }
  }
  return store;
}

class S3WorkspaceStore implements WorkspaceStore {
  readonly driver = "s3";
  private closed = false;

  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    private readonly partSizeBytes: number,
    private readonly requestTimeoutMs: number,
  ) {}

  async ensureBucket(): Promise<void> {
    try {
      await this.call("head bucket", undefined, (abortSignal) =>
        this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal }),
      );
      return;
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
    try {
      await this.call("create bucket", undefined, (abortSignal) =>
        this.client.send(new CreateBucketCommand({ Bucket: this.bucket }), { abortSignal }),
      );
    } catch (error) {
      const name = (error as Error).name;
      // Another replica created it in between.
      if (name !== "BucketAlreadyOwnedByYou" && name !== "BucketAlreadyExists") throw error;
    }
  }

  async put(key: string, body: WorkspaceBody, options: PutOptions = {}): Promise<PutResult> {
    this.check(key);
    const controller = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, controller.signal]) : controller.signal;
    signal.throwIfAborted();
    const Bucket = this.bucket;
    const partSize = this.partSizeBytes;
    const hash = createHash("sha256");
    let bytes = 0;
    let stored = 0;
    let buffer = Buffer.allocUnsafe(partSize);
    let filled = 0;
    let uploadId: string | undefined;
    const parts: CompletedPart[] = [];
    const inFlight = new Set<Promise<void>>();
    let failure: { error: unknown } | undefined;

    const uploadPart = async (): Promise<void> => {
      if (uploadId === undefined) {
        const created = await this.call(
          "create multipart upload",
          key,
          (abortSignal) => this.client.send(new CreateMultipartUploadCommand({ Bucket, Key: key }), { abortSignal }),
          signal,
        );
        if (!created.UploadId) throw new Error("CreateMultipartUpload returned no UploadId");
        uploadId = created.UploadId;
      }
      while (inFlight.size >= PARTS_IN_FLIGHT) await Promise.race(inFlight);
      if (failure) throw failure.error;
      const UploadId = uploadId;
      const PartNumber = parts.length + 1;
      const Body = buffer.subarray(0, filled);
      const part: CompletedPart = { PartNumber };
      parts.push(part);
      buffer = Buffer.allocUnsafe(partSize);
      filled = 0;
      const upload = this.call(
        "upload part",
        key,
        (abortSignal) =>
          this.client.send(new UploadPartCommand({ Bucket, Key: key, UploadId, PartNumber, Body }), { abortSignal }),
        signal,
      ).then(
        ({ ETag }) => {
          part.ETag = ETag;
          stored += Body.length;
          options.onProgress?.(stored);
        },
        (error: unknown) => {
          failure ??= { error };
          controller.abort(error);
        },
      );
      inFlight.add(upload);
      void upload.finally(() => inFlight.delete(upload));
    };

    try {
      for await (const chunk of readWorkspaceBody(body, signal)) {
        hash.update(chunk);
        bytes += chunk.length;
        let offset = 0;
        while (offset < chunk.length) {
          // A full buffer goes out only once more bytes come: a body of exactly one part is a PutObject.
          if (filled === partSize) await uploadPart();
          const n = Math.min(partSize - filled, chunk.length - offset);
          buffer.set(chunk.subarray(offset, offset + n), filled);
          filled += n;
          offset += n;
        }
      }
      if (uploadId === undefined) {
        const Body = buffer.subarray(0, filled);
        await this.call(
          "put",
          key,
          (abortSignal) => this.client.send(new PutObjectCommand({ Bucket, Key: key, Body }), { abortSignal }),
          signal,
        );
        stored = Body.length;
        options.onProgress?.(stored);
      } else {
        if (filled > 0) await uploadPart();
        await Promise.all(inFlight);
        if (failure) throw failure.error;
        signal.throwIfAborted();
        const UploadId = uploadId;
        await this.call(
          "complete multipart upload",
          key,
          (abortSignal) =>
            this.client.send(
              new CompleteMultipartUploadCommand({ Bucket, Key: key, UploadId, MultipartUpload: { Parts: parts } }),
              { abortSignal },
            ),
          signal,
        );
      }
    } catch (error) {
      controller.abort(error);
      await Promise.allSettled(inFlight);
      if (uploadId !== undefined) await this.abortUpload(key, uploadId);
      if (options.signal?.aborted) throw options.signal.reason;
      throw failure ? failure.error : error;
    }
    return { bytes, sha256: hash.digest("hex") };
  }

  async get(key: string, options: GetOptions = {}): Promise<AsyncIterable<Uint8Array>> {
    this.check(key);
    const response = await this.call(
      "get",
      key,
      (abortSignal) => this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal }),
      options.signal,
    ).catch((error: unknown) => {
      throw isNotFound(error) ? new WorkspaceObjectNotFoundError(key, { cause: error }) : error;
    });
    const body = response.Body as AsyncIterable<Uint8Array> | undefined;
    if (!body || typeof body[Symbol.asyncIterator] !== "function") throw new Error("GetObject returned no stream");
    const signal = options.signal;
    return (async function* () {
      try {
        yield* body;
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        throw new WorkspaceStoreUnavailableError(`get ${key}: the download failed`, { cause: error });
      }
    })();
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    this.check(key);
    try {
      const head = await this.call("stat", key, (abortSignal) =>
        this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal }),
      );
      return { bytes: head.ContentLength ?? 0, modifiedAtMs: head.LastModified?.getTime() ?? 0 };
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ListResult> {
    this.check(undefined);
    validateWorkspacePrefix(prefix);
    const limit = resolveListLimit(options.limit);
    const page = await this.call("list", prefix, (abortSignal) =>
      this.client.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: prefix,
          MaxKeys: limit,
          ...(options.after === undefined ? {} : { StartAfter: options.after }),
        }),
        { abortSignal },
      ),
    );
    const keys = (page.Contents ?? []).flatMap((object) =>
      object.Key === undefined
        ? []
        : [{ key: object.Key, bytes: object.Size ?? 0, modifiedAtMs: object.LastModified?.getTime() ?? 0 }],
    );
    const last = keys.at(-1);
    return page.IsTruncated && last ? { keys, nextAfter: last.key } : { keys };
  }

  async delete(key: string): Promise<void> {
    this.check(key);
    try {
      await this.call("delete", key, (abortSignal) =>
        this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal }),
      );
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
  }

  async deletePrefix(prefix: string): Promise<number> {
    this.check(undefined);
    validateWorkspacePrefix(prefix, true);
    // Uploads first: one that completes before its abort is then deleted as an object.
    await this.abortUploads(prefix);
    let deleted = 0;
    let ContinuationToken: string | undefined;
    do {
      const page = await this.call("list", prefix, (abortSignal) =>
        this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, MaxKeys: 1000, ContinuationToken }),
          { abortSignal },
        ),
      );
      const Objects = (page.Contents ?? []).flatMap((object) =>
        object.Key === undefined ? [] : [{ Key: object.Key }],
      );
      if (Objects.length > 0) {
        const result = await this.call("delete prefix", prefix, (abortSignal) =>
          this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects, Quiet: true } }), {
            abortSignal,
          }),
        );
        const errors = (result.Errors ?? []).filter((error) => error.Code !== "NoSuchKey");
        if (errors.length > 0) {
          const first = errors[0];
          throw new Error(
            `delete prefix ${prefix}: ${errors.length} objects not deleted, first ${first?.Key}: ${first?.Code} ${first?.Message}`,
          );
        }
        deleted += Objects.length - (result.Errors?.length ?? 0);
      }
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
    return deleted;
  }

  async abortUploads(prefix: string, options: AbortUploadsOptions = {}): Promise<number> {
    this.check(undefined);
    validateWorkspacePrefix(prefix, true);
    const before = options.startedBeforeMs ?? Number.POSITIVE_INFINITY;
    let aborted = 0;
    let KeyMarker: string | undefined;
    let UploadIdMarker: string | undefined;
    do {
      const page = await this.call("list uploads", prefix, (abortSignal) =>
        this.client.send(
          new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: prefix, KeyMarker, UploadIdMarker }),
          { abortSignal },
        ),
      );
      for (const { Key, UploadId, Initiated } of page.Uploads ?? []) {
        if (Key === undefined || UploadId === undefined || (Initiated?.getTime() ?? 0) >= before) continue;
        try {
          await this.call("abort multipart upload", Key, (abortSignal) =>
            this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId }), { abortSignal }),
          );
          aborted++;
        } catch (error) {
          // Completed or aborted meanwhile.
          if (!isNotFound(error)) throw error;
        }
      }
      KeyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
      UploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
    } while (KeyMarker);
    return aborted;
  }

  async ping(): Promise<boolean> {
    if (this.closed) return false;
    try {
      await this.call("ping", undefined, (abortSignal) =>
        this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal }),
      );
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.client.destroy();
  }

  private check(key: string | undefined): void {
    if (this.closed) throw new Error("the workspace store is closed");
    if (key !== undefined) validateWorkspaceKey(key);
  }

  /** Best effort: a failed abort leaves parts that the bucket's lifecycle rules must clean. */
  private async abortUpload(key: string, UploadId: string): Promise<void> {
    await this.call("abort multipart upload", key, (abortSignal) =>
      this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId }), { abortSignal }),
    ).catch(() => {});
  }

  /**
   * Runs one request under the request timeout (until its response headers) and the caller's
   * signal, turning outages into {@link WorkspaceStoreUnavailableError} and a caller's abort
   * into the signal's reason.
   */
  private async call<T>(
    operation: string,
    key: string | undefined,
    run: (abortSignal: AbortSignal) => Promise<T>,
    signal?: AbortSignal,
  ): Promise<T> {
    signal?.throwIfAborted();
    const timeout = new AbortController();
    const timer = setTimeout(
      () => timeout.abort(new Error(`timed out after ${this.requestTimeoutMs} ms`)),
      this.requestTimeoutMs,
    );
    const abortSignal = signal ? AbortSignal.any([signal, timeout.signal]) : timeout.signal;
    try {
      return await run(abortSignal);
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      const what = key === undefined ? operation : `${operation} ${key}`;
      if (timeout.signal.aborted) {
        throw new WorkspaceStoreUnavailableError(`${what}: timed out after ${this.requestTimeoutMs} ms`, {
          cause: error,
        });
      }
      if (isUnavailable(error))
        throw new WorkspaceStoreUnavailableError(`${what}: the store is unavailable`, { cause: error });
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * DeleteObjects must carry a checksum; the SDK sends a CRC32 header, but S3-compatible stores
 * such as Swift's s3api demand the older Content-MD5, which this middleware adds.
 */
function addDeleteObjectsContentMd5(client: S3Client): void {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const request = args.request as { headers?: Record<string, string>; body?: unknown } | undefined;
      const body = request?.body;
      if (
        context.commandName === "DeleteObjectsCommand" &&
        request?.headers &&
        (typeof body === "string" || body instanceof Uint8Array)
      ) {
        request.headers["content-md5"] = createHash("md5").update(body).digest("base64");
      }
      return next(args);
    },
    { step: "build", name: "deleteObjectsContentMd5" },
  );
}

const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EHOSTDOWN",
  "UND_ERR_SOCKET",
]);

function isUnavailable(error: unknown): boolean {
  if (error instanceof S3ServiceException) {
    const status = error.$metadata?.httpStatusCode ?? 0;
    return status >= 500 || status === 429 || error.name === "SlowDown" || error.name === "RequestTimeout";
  }
  if (!(error instanceof Error)) return false;
  const code = (error as NodeJS.ErrnoException).code;
  if (code !== undefined && NETWORK_CODES.has(code)) return true;
  return error.name === "TimeoutError" || error.name === "AbortError";
}

function isNotFound(error: unknown): boolean {
  if (!(error instanceof S3ServiceException)) return false;
  return error.name === "NoSuchKey" || error.name === "NotFound" || error.$metadata?.httpStatusCode === 404;
}
